"""The one place that knows model names, configs and checkpoints.

Names: ``rvos-st``, ``rvos-s``, ``rvos-t`` (RVOS with spatio-temporal, spatial or temporal recurrence) and
``s2s``. Every other choice is a keyword option, e.g.
``build_model("rvos-st", mode="zero-shot", backbone="resnet101", backbone_weights="imagenet")``.

A checkpoint is a dict ``{"format": "recvos-model/1", "model_name", "model_config", "state_dict"}``
(training checkpoints add more keys); loading rebuilds the model from its name and config with
``backbone_weights=None`` and loads the state dict strictly (``weights_only=True``).
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recvos.errors import RecvosError
from recvos.models.backbones import DEFAULT_BACKBONE, backbone_info
from recvos.models.base import RecurrentVOS

__all__ = [
    "CHECKPOINT_FORMAT",
    "ModelInfo",
    "build_model",
    "list_models",
    "model_names",
    "model_to_checkpoint",
    "model_from_checkpoint",
    "save_model",
    "load_checkpoint",
    "count_parameters",
]

CHECKPOINT_FORMAT = "recvos-model/1"


@dataclass(frozen=True)
class _Spec:
    description: str
    builder: Callable[..., RecurrentVOS]
    fixed: Mapping[str, Any]  # options the name decides
    modes: tuple[str, ...]


def _rvos(**kw: Any) -> RecurrentVOS:
    from recvos.models.rvos import RVOS

    return RVOS(**kw)


def _s2s(**kw: Any) -> RecurrentVOS:
    from recvos.models.s2s import S2S

    return S2S(**kw)


def _rvos_cls() -> type:
    from recvos.models.rvos import RVOS

    return RVOS


def _s2s_cls() -> type:
    from recvos.models.s2s import S2S

    return S2S


_REGISTRY: dict[str, _Spec] = {
    "rvos-st": _Spec("RVOS, spatio-temporal recurrence (the paper's best)", _rvos, {"variant": "ST"},
                     ("one-shot", "zero-shot")),
    "rvos-s": _Spec("RVOS, spatial recurrence only (RSIS per frame)", _rvos, {"variant": "S"},
                    ("one-shot", "zero-shot")),
    "rvos-t": _Spec("RVOS, temporal recurrence only (objects in parallel)", _rvos, {"variant": "T"},
                    ("one-shot",)),
    "s2s": _Spec("S2S (YouTube-VOS): initializer + ConvLSTM encoder-decoder", _s2s, {}, ("one-shot",)),
}

_CLASSES = {"rvos-st": _rvos_cls, "rvos-s": _rvos_cls, "rvos-t": _rvos_cls, "s2s": _s2s_cls}


def model_names() -> list[str]:
    return list(_REGISTRY)


def _spec(name: str) -> _Spec:
    if name not in _REGISTRY:
        raise RecvosError(f"unknown model {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _valid_options(name: str) -> list[str]:
    params = inspect.signature(_CLASSES[name]().__init__).parameters
    return [p for p in params if p != "self" and p not in _REGISTRY[name].fixed]


def build_model(name: str, **options: Any) -> RecurrentVOS:
    """Build a registered model; ``options`` are the model class's keyword arguments.

    Unknown names and options raise :class:`RecvosError` listing the valid ones.
    """
    spec = _spec(name)
    valid = _valid_options(name)
    for key, value in options.items():
        if key in spec.fixed:
            if value != spec.fixed[key]:
                raise RecvosError(f"model {name} has {key}={spec.fixed[key]!r} (got {value!r}); pick another name")
        elif key not in valid:
            raise RecvosError(f"unknown option {key!r} for model {name}; valid options: {', '.join(valid)}")
    return spec.builder(**{**options, **spec.fixed})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


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
        rows.append(ModelInfo(name, spec.description, bb, spec.modes, n, info.imagenet_available, info.weights_path))
    return rows


# ------------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------------


def model_to_checkpoint(model: RecurrentVOS) -> dict[str, Any]:
    """{"format", "model_name", "model_config", "state_dict"} for ``model``."""
    if getattr(model, "inference_only", False):
        raise RecvosError(f"{model.name} was optimized for inference (BatchNorm folded); save the original model")
    if model.name not in _REGISTRY:
        raise RecvosError(f"model name {model.name!r} is not registered; valid names: {', '.join(_REGISTRY)}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {"format": CHECKPOINT_FORMAT, "model_name": model.name, "model_config": dict(model.config),
            "state_dict": state}


def save_model(model: RecurrentVOS, path: str | Path, **extra: Any) -> None:
    """Write ``model_to_checkpoint(model)`` plus ``extra`` keys to ``path`` atomically (temp file + rename)."""
    path = Path(path)
    ckpt = {**model_to_checkpoint(model), **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(ckpt, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_from_checkpoint(ckpt: Mapping[str, Any], source: str = "checkpoint") -> RecurrentVOS:
    """Rebuild the model of a checkpoint dict (backbone_weights=None) and load its state dict strictly."""
    for key in ("model_name", "model_config", "state_dict"):
        if key not in ckpt:
            raise RecvosError(f"{source}: not a recvos checkpoint (no {key!r}); save it with recvos.save_model")
    fmt = ckpt.get("format", CHECKPOINT_FORMAT)
    if fmt != CHECKPOINT_FORMAT:
        raise RecvosError(f"{source}: checkpoint format {fmt!r} is not {CHECKPOINT_FORMAT!r}; upgrade recvos")
    config = {**ckpt["model_config"], "backbone_weights": None}
    try:
        model = build_model(ckpt["model_name"], **config)
    except RecvosError as e:
        raise RecvosError(f"{source}: {e}") from e
    own = model.state_dict()
    sd = ckpt["state_dict"]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f" ... ({len(keys)} in all)" if len(keys) > 3 else "")

        parts = [f"{label}: {few(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", wrong)) if keys]
        raise RecvosError(
            f"{source}: state dict does not match {ckpt['model_name']} built from its config ({'; '.join(parts)}); "
            f"the file is corrupt or from another model"
        )
    model.load_state_dict(sd, strict=True)
    return model


def warm_start(model: RecurrentVOS, path: str | Path) -> list[str]:
    """Initialise ``model`` from the weights of another checkpoint of the same architecture family.

    Tensors of matching name and shape are copied; the model's ``adapt_state_dict`` (if it has one) first
    maps the checkpoint onto it (e.g. RVOS without -> with ``reference``). Parameters the checkpoint lacks
    keep their initialisation and are returned; anything else that does not fit raises RecvosError.
    """
    source = load_checkpoint(path)
    sd = source.state_dict()
    if hasattr(model, "adapt_state_dict"):
        sd = model.adapt_state_dict(sd)
    own = model.state_dict()
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if unexpected or wrong:
        raise RecvosError(
            f"{path}: cannot warm-start {model.name} from {source.name} "
            f"(unexpected keys: {unexpected[:3]}, shape mismatch: {wrong[:3]}); pick a checkpoint of the same model"
        )
    missing = sorted(set(own) - set(sd))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=False)
    return missing


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> RecurrentVOS:
    """Load a model (or training) checkpoint written by :func:`save_model`; strict, ``weights_only=True``.

    The model is returned in eval mode on ``map_location`` (cast to ``dtype`` if given).
    """
    path = Path(path)
    if not path.is_file():
        raise RecvosError(f"{path}: checkpoint not found; pass the path of a file written by recvos")
    try:
        if path.suffix == ".gz":  # shipped weights are gzip-compressed checkpoints (about 8% smaller in fp16)
            import gzip
            import io

            with gzip.open(path, "rb") as f:
                ckpt = torch.load(io.BytesIO(f.read()), map_location=map_location, weights_only=True)
        else:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise RecvosError(f"{path}: cannot read checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    if not isinstance(ckpt, Mapping):
        raise RecvosError(f"{path}: not a recvos checkpoint (a dict with model_name, model_config, state_dict)")
    model = model_from_checkpoint(ckpt, str(path)).to(map_location)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
