"""torchvision VGG-16 (paper backbone, no BN): relu3_3 (f4), relu4_3 (f8), relu5_3 (f16), pool5 (f32)."""

from __future__ import annotations

import torch
from torch import nn

from recvos.models.backbones.base import IMAGENET_MEAN, IMAGENET_STD, Backbone
from recvos.models.backbones.registry import register_backbone
from recvos.models.backbones.weights import TorchvisionWeights

__all__ = ["VGG16Backbone"]


class VGG16Backbone(Backbone):
    """The conv part of torchvision's VGG-16 (``classifier.*`` keys are dropped on load).

    Pools use ``ceil_mode=True`` so sizes follow :func:`feature_sizes` like the other backbones.
    """

    head_prefixes = ("classifier.",)
    #: index ranges of ``features`` making up the 5 stages (stem to stride 4, then f4, f8, f16, f32)
    _bounds = ((0, 10), (10, 16), (16, 23), (23, 30), (30, 31))

    def __init__(self) -> None:
        from torchvision.models.vgg import cfgs, make_layers

        # Only the conv part: building torchvision's 100M-parameter classifier head would take seconds.
        features = make_layers(cfgs["D"], batch_norm=False)
        widths = [m.out_channels for m in features if isinstance(m, nn.Conv2d)]  # after each conv
        convs_up_to = [sum(isinstance(m, nn.Conv2d) for m in features[:b]) for _, b in self._bounds[1:]]
        super().__init__(tuple(widths[n - 1] for n in convs_up_to), IMAGENET_MEAN, IMAGENET_STD)
        self.name = "vgg16"
        self.features = features
        for m in self.features:
            if isinstance(m, nn.MaxPool2d):
                m.ceil_mode = True
            elif isinstance(m, nn.Conv2d):  # torchvision's VGG init
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def stage_modules(self) -> list[list[nn.Module]]:
        return [list(self.features[a:b]) for a, b in self._bounds]

    def first_conv(self) -> nn.Conv2d:
        return self.features[0]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, (a, b) in enumerate(self._bounds):
            for j in range(a, b):
                x = self.features[j](x)
            if i > 0:
                out.append(x)
        return out


@register_backbone(channels=(256, 512, 512, 512), weights=TorchvisionWeights("VGG16_Weights"))
def vgg16() -> Backbone:
    return VGG16Backbone()
