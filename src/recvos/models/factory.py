"""The model registry: small builder functions, each declaring its name, description and capabilities once.

Names: ``rvos-st``, ``rvos-s``, ``rvos-t`` (RVOS with spatio-temporal, spatial or temporal recurrence) and
``s2s``, and ``prompt-head`` (the learned interactive head of :mod:`recvos.prompts`, mode "interactive").
Every other choice is a keyword option of the model class, e.g.
``build_model("rvos-st", mode="zero-shot", backbone="resnet101", backbone_weights="imagenet")``.
Checkpoints, the shipped weights and name/path resolution live in :mod:`recvos.models.loading`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recvos.errors import RecvosError
from recvos.models.backbones import DEFAULT_BACKBONE, backbone_info
from recvos.models.base import MODES, RecurrentVOS
from recvos.models.state_dicts import count_parameters

__all__ = [
    "ModelSpec",
    "ModelInfo",
    "register_model",
    "model_spec",
    "build_model",
    "list_models",
    "model_names",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: what the name builds and what it can do."""

    name: str
    description: str
    builder: Callable[..., RecurrentVOS]
    #: the model class (its ``__init__`` keyword arguments are the valid options) and the options the name fixes
    model_class: Callable[[], type]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: tasks the model can be built for (``mode=...``)
    modes: tuple[str, ...] = ("one-shot",)
    #: matches frames against each object's annotated frame (``reference=True``)
    supports_reference: bool = False

    def options(self) -> list[str]:
        params = inspect.signature(self.model_class().__init__).parameters
        return [p for p in params if p != "self" and p not in self.fixed]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    model_class: Callable[[], type],
    *,
    fixed: Mapping[str, Any] | None = None,
    modes: tuple[str, ...] = ("one-shot",),
    supports_reference: bool = False,
) -> Callable[[Callable[..., RecurrentVOS]], Callable[..., RecurrentVOS]]:
    """Register a builder function; its name (``rvos_st`` -> ``rvos-st``) and docstring's first line become
    the model's name and description."""

    def register(fn: Callable[..., RecurrentVOS]) -> Callable[..., RecurrentVOS]:
        name = fn.__name__.replace("_", "-")
        doc = (fn.__doc__ or name).strip().splitlines()[0]
        _REGISTRY[name] = ModelSpec(name, doc, fn, model_class, dict(fixed or {}), modes, supports_reference)
        return fn

    return register


def _rvos_class() -> type:
    from recvos.models.rvos import RVOS

    return RVOS


def _s2s_class() -> type:
    from recvos.models.s2s import S2S

    return S2S


@register_model(_rvos_class, fixed={"variant": "ST"}, modes=MODES, supports_reference=True)
def rvos_st(**options: Any) -> RecurrentVOS:
    """RVOS, spatio-temporal recurrence (the paper's best)"""
    return _rvos_class()(variant="ST", **options)


@register_model(_rvos_class, fixed={"variant": "S"}, modes=MODES, supports_reference=True)
def rvos_s(**options: Any) -> RecurrentVOS:
    """RVOS, spatial recurrence only (RSIS per frame)"""
    return _rvos_class()(variant="S", **options)


@register_model(_rvos_class, fixed={"variant": "T"}, supports_reference=True)
def rvos_t(**options: Any) -> RecurrentVOS:
    """RVOS, temporal recurrence only (objects in parallel)"""
    return _rvos_class()(variant="T", **options)


@register_model(_s2s_class)
def s2s(**options: Any) -> RecurrentVOS:
    """S2S (YouTube-VOS): initializer + ConvLSTM encoder-decoder"""
    return _s2s_class()(**options)


def _prompt_head_class() -> type:
    from recvos.models.prompt_head import PromptHead

    return PromptHead


@register_model(_prompt_head_class, modes=("interactive",))
def prompt_head(**options: Any) -> Any:
    """Interactive head: a box or clicks -> one object's mask, on a frozen VOS backbone"""
    return _prompt_head_class()(**options)


def model_names() -> list[str]:
    return list(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        raise RecvosError(f"unknown model {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_model(name: str, **options: Any) -> RecurrentVOS:
    """Build a registered model; ``options`` are the model class's keyword arguments.

    Unknown names and options, and a mode the model does not support, raise :class:`RecvosError`.
    """
    spec = model_spec(name)
    valid = spec.options()
    for key, value in options.items():
        if key in spec.fixed:
            if value != spec.fixed[key]:
                raise RecvosError(
                    f"model {name} has {key}={spec.fixed[key]!r} (got {value!r}); pick another name"
                )
        elif key not in valid:
            raise RecvosError(f"unknown option {key!r} for model {name}; valid options: {', '.join(valid)}")
    mode = options.get("mode", spec.modes[0])
    if mode not in spec.modes:
        raise RecvosError(
            f"model {name} supports mode {' or '.join(spec.modes)} (got {mode!r}); "
            f"use rvos-st or rvos-s for zero-shot"
        )
    options = {k: v for k, v in options.items() if k not in spec.fixed}
    return spec.builder(**options)


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``recvos models``."""

    name: str
    description: str
    backbone: str
    modes: tuple[str, ...]
    num_params: int
    pretrained_available: bool  # ImageNet weights of the backbone are on this machine
    weights_path: str


def list_models(backbone: str | None = None, count_params: bool = True) -> list[ModelInfo]:
    """The registry, with parameter counts (builds each model once, randomly initialised) and whether the
    backbone's ImageNet weights are available locally. ``backbone`` defaults to each model's default."""
    rows = []
    for name, spec in _REGISTRY.items():
        bb = backbone or DEFAULT_BACKBONE
        info = backbone_info(bb)
        n = count_parameters(build_model(name, backbone=bb)) if count_params else -1
        rows.append(
            ModelInfo(name, spec.description, bb, spec.modes, n, info.imagenet_available, info.weights_path)
        )
    return rows
