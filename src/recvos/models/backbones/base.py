"""What every backbone is: frames in ``[B, 3+E, H, W]`` in [0, 1], features ``[f4, f8, f16, f32]`` out."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from recvos.errors import RecvosError
from recvos.models.state_dicts import require_match

__all__ = [
    "Backbone",
    "feature_sizes",
    "with_features",
    "STRIDES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "EFFICIENTNET_LITE_MEAN",
    "EFFICIENTNET_LITE_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EFFICIENTNET_LITE_MEAN = (0.5, 0.5, 0.5)  # TF-Lite's (x - 127) / 128
EFFICIENTNET_LITE_STD = (0.5, 0.5, 0.5)

STRIDES = (4, 8, 16, 32)


def feature_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Sizes (h, w) of ``[f4, f8, f16, f32]`` for an input of ``height x width`` (ceil division)."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in STRIDES]


_FEATURES = "_recvos_backbone_features"


def with_features(batch: int, height: int, width: int, features: list[torch.Tensor]) -> torch.Tensor:
    """A stand-in frame [batch, 3, height, width] (zeros, no memory: an expanded scalar) that carries its
    backbone features ``[f4, f8, f16, f32]``: a :class:`Backbone` given it returns them instead of running.
    Only for models whose backbone sees nothing but the frame (``RecurrentVOS.accepts_features``)."""
    f = features[0]
    frame = f.new_zeros((), dtype=torch.float32).expand(batch, 3, height, width)
    setattr(frame, _FEATURES, list(features))
    return frame


def _batchnorms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class Backbone(nn.Module):
    """Base class: ``forward(x [B, 3+E, H, W] in [0, 1]) -> [f4, f8, f16, f32]``.

    Subclasses build their layers, implement :meth:`stage_modules` (5 stages: a stem to stride 2 or 4, then
    one stage per output stride; the outputs of stages 1..4 are the features), :meth:`first_conv` and
    :meth:`forward_features`. Attributes: ``name``, ``channels`` (4 ints), ``mean``/``std`` (RGB
    normalisation of the weights), ``in_channels``, ``frozen_bn``, ``freeze_stages``.
    """

    name: str = "backbone"
    #: keys of the source classifier that are not part of the backbone (dropped when loading)
    head_prefixes: tuple[str, ...] = ()

    def __init__(self, channels: tuple[int, int, int, int], mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.in_channels = 3
        self.frozen_bn = False
        self.freeze_stages = 0
        # Non-persistent: normalisation is a property of the architecture, not of a checkpoint.
        scale = torch.tensor([1.0 / s for s in std]).view(1, 3, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(1, 3, 1, 1)
        self.register_buffer("_scale", scale, persistent=False)
        self.register_buffer("_shift", shift, persistent=False)

    # -- to implement ---------------------------------------------------------------------------------
    def stage_modules(self) -> list[list[nn.Module]]:  # pragma: no cover - abstract
        """The 5 stages as lists of modules (for freezing)."""
        raise NotImplementedError

    def first_conv(self) -> nn.Conv2d:  # pragma: no cover - abstract
        """The convolution that sees the input (widened by :meth:`expand_input`)."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        """x: normalised [B, C, H, W] -> [f4, f8, f16, f32]."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3+E, H, W] in [0, 1] -> normalised: RGB with the weights' mean/std, extra channels to [-1, 1]."""
        rgb = x[:, :3] * self._scale.to(x.dtype) + self._shift.to(x.dtype)
        if x.shape[1] == 3:
            return rgb
        return torch.cat([rgb, x[:, 3:] * 2.0 - 1.0], 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x [B, in_channels, H, W] float in [0, 1] -> [f4, f8, f16, f32] ([B, channels[i], ceil(H/s), ceil(W/s)]).

        A frame made by :func:`with_features` returns the features it carries (training from a feature cache).
        """
        given = getattr(x, _FEATURES, None)
        if given is not None:
            sizes = self.feature_sizes(*x.shape[-2:])
            got = [(f.shape[1], tuple(f.shape[-2:])) for f in given]
            if got != list(zip(self.channels, sizes, strict=True)):
                raise RecvosError(
                    f"precomputed features {got} do not fit {self.name} at {tuple(x.shape[-2:])} "
                    f"(expected {list(zip(self.channels, sizes, strict=True))}); rebuild the feature cache"
                )
            return list(given)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self.name} expects {self.in_channels} input channels, got {x.shape[1]}")
        return self.forward_features(self.normalize(x))

    def feature_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        return feature_sizes(height, width)

    def configure(self, frozen_bn: bool = False, freeze_stages: int = 0) -> None:
        """Freeze BatchNorm (eval mode, no grad) and/or the parameters of the first ``freeze_stages`` stages."""
        if not 0 <= freeze_stages <= 5:
            raise RecvosError(f"freeze_stages must be in 0..5 (got {freeze_stages})")
        self.frozen_bn = bool(frozen_bn)
        self.freeze_stages = int(freeze_stages)
        frozen = (_batchnorms(self) if self.frozen_bn else []) + [
            m for stage in self.stage_modules()[: self.freeze_stages] for m in stage
        ]
        for m in frozen:
            m.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        if mode:
            if self.frozen_bn:
                for m in _batchnorms(self):
                    m.eval()
            for stage in self.stage_modules()[: self.freeze_stages]:
                for m in stage:
                    m.eval()
        return self

    def expand_input(self, in_channels: int, init: str = "mean") -> None:
        """Give the first conv ``in_channels`` inputs; extra filters = mean of the RGB filters, or zero."""
        if in_channels == self.in_channels:
            return
        if in_channels < 3:
            raise RecvosError(f"a backbone needs at least 3 input channels (got {in_channels})")
        if init not in ("mean", "zero"):
            raise RecvosError(f"extra_channel_init must be 'mean' or 'zero' (got {init!r})")
        conv = self.first_conv()
        w = conv.weight.data
        extra = w.mean(1, keepdim=True) if init == "mean" else torch.zeros_like(w[:, :1])
        new = torch.cat([w[:, :3], extra.expand(-1, in_channels - 3, -1, -1)], 1).contiguous()
        conv.weight = nn.Parameter(new, requires_grad=conv.weight.requires_grad)
        conv.in_channels = in_channels
        self.in_channels = in_channels

    def load_weights_dict(self, sd: Mapping[str, torch.Tensor], source: str) -> None:
        """Strictly load a backbone or source-classifier state dict (classifier head keys are dropped)."""
        sd = {k: v for k, v in sd.items() if not k.startswith(self.head_prefixes)}
        require_match(
            self.state_dict(),
            sd,
            source,
            fix=f"not a {self.name} state dict: pass one saved from this backbone or from its source classifier",
        )
        self.load_state_dict(sd, strict=True)
