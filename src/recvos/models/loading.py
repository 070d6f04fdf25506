"""Where models come from: checkpoints (strict, ``weights_only``), the shipped weights and their manifest,
warm starts, export, and :func:`resolve_model`, which turns a name, a path or nothing (the shipped default)
into a model. Used by the CLI, the Segmenter and training alike.

A checkpoint is a dict ``{"format": "recvos-model/1", "model_name", "model_config", "state_dict"}``
(training checkpoints add more keys); loading rebuilds the model from its name and config with
``backbone_weights=None`` and loads the state dict strictly. Gzip-compressed checkpoints (``.pt.gz``, the
shipped weights) are read transparently.

The manifest ``recvos/weights/manifest.json`` is ``{"format": "recvos-weights/1", "entries": [...]}``; each
entry is ``{name, kind, file, sha256, architecture, preset, data, commit, metrics, ...}`` where ``kind`` is
"one-shot" or "zero-shot" and ``sha256`` is verified on every load. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from recvos.errors import RecvosError
from recvos.fileio import atomic_torch_save, atomic_write
from recvos.models.base import RecurrentVOS
from recvos.models.factory import build_model, model_names
from recvos.models.state_dicts import require_match

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "MANIFEST_FORMAT",
    "WEIGHTS_DIR",
    "MANIFEST",
    "KINDS",
    "MODEL_KEYS",
    "model_to_checkpoint",
    "save_model",
    "model_from_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "warm_start",
    "sha256_file",
    "read_manifest",
    "default_entry",
    "default_checkpoint_path",
    "export_weights",
    "add_to_manifest",
    "resolve_model",
]

CHECKPOINT_FORMAT = "recvos-model/1"
MANIFEST_FORMAT = "recvos-weights/1"
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
KINDS = ("one-shot", "zero-shot", "interactive")
MODEL_KEYS = ("format", "model_name", "model_config", "state_dict")


# ------------------------------------------------------------------------------------------ checkpoints
def model_to_checkpoint(model: RecurrentVOS) -> dict[str, Any]:
    """{"format", "model_name", "model_config", "state_dict"} for ``model`` (tensors on the CPU)."""
    if model.inference_only:
        raise RecvosError(
            f"{model.name} was optimized for inference (BatchNorm folded); save the original model"
        )
    if model.name not in model_names():
        raise RecvosError(
            f"model name {model.name!r} is not registered; valid names: {', '.join(model_names())}"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {
        "format": CHECKPOINT_FORMAT,
        "model_name": model.name,
        "model_config": dict(model.config),
        "state_dict": state,
    }


def save_model(model: RecurrentVOS, path: str | Path, **extra: Any) -> None:
    """Write ``model_to_checkpoint(model)`` plus ``extra`` keys to ``path`` atomically."""
    atomic_torch_save({**model_to_checkpoint(model), **extra}, path)


def _model_config(config: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A checkpoint's model config, rebuildable today: no backbone download, and the options of the RSIS class
    head (removed) dropped, which is exact only for checkpoints built without the head."""
    config = {**config, "backbone_weights": None}
    config.pop("num_classes", None)
    if config.pop("class_head", False):
        raise RecvosError(
            f"{source}: this checkpoint has an RSIS class head, which recvos no longer has; "
            "retrain it without model.options.class_head"
        )
    return config


def model_from_checkpoint(ckpt: Mapping[str, Any], source: str = "checkpoint") -> RecurrentVOS:
    """Rebuild the model of a checkpoint dict (backbone_weights=None) and load its state dict strictly."""
    for key in ("model_name", "model_config", "state_dict"):
        if key not in ckpt:
            raise RecvosError(
                f"{source}: not a recvos checkpoint (no {key!r}); save it with recvos.save_model"
            )
    fmt = ckpt.get("format", CHECKPOINT_FORMAT)
    if fmt != CHECKPOINT_FORMAT:
        raise RecvosError(f"{source}: checkpoint format {fmt!r} is not {CHECKPOINT_FORMAT!r}; upgrade recvos")
    try:
        model = build_model(ckpt["model_name"], **_model_config(ckpt["model_config"], source))
    except RecvosError as e:
        raise RecvosError(f"{source}: {e}") from e
    require_match(
        model.state_dict(),
        ckpt["state_dict"],
        source,
        f"the state dict does not match {ckpt['model_name']} built from its config: the file is corrupt "
        "or from another model",
    )
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict stored in a checkpoint file (``.pt`` or gzip ``.pt.gz``), read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise RecvosError(f"{path}: checkpoint not found; pass the path of a file written by recvos")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                ckpt = torch.load(io.BytesIO(f.read()), map_location=map_location, weights_only=True)
        else:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise RecvosError(
            f"{path}: not a recvos checkpoint (cannot read it: {type(e).__name__}); "
            "pass a file written by recvos train or recvos.save_model"
        ) from None
    if not isinstance(ckpt, Mapping):
        raise RecvosError(
            f"{path}: not a recvos checkpoint (a dict with model_name, model_config, state_dict)"
        )
    return dict(ckpt)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> RecurrentVOS:
    """Load a model (or training) checkpoint; strict, ``weights_only=True``. Returned in eval mode on
    ``map_location`` (cast to ``dtype`` if given)."""
    model = model_from_checkpoint(read_checkpoint(path, map_location), str(path)).to(map_location)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def warm_start(model: RecurrentVOS, path: str | Path) -> list[str]:
    """Initialise ``model`` from another checkpoint of the same architecture family.

    The model's :meth:`~recvos.models.base.RecurrentVOS.adapt_state_dict` first maps the checkpoint onto it
    (e.g. RVOS without -> with ``reference``). Parameters the checkpoint lacks keep their initialisation and
    are returned; anything else that does not fit raises RecvosError.
    """
    source = load_checkpoint(path)
    sd = model.adapt_state_dict(source.state_dict())
    own = model.state_dict()
    mm = require_match(
        own,
        sd,
        str(path),
        f"cannot warm-start {model.name} from {source.name}: pick a checkpoint of the same model",
        allow_missing=True,
    )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=False)
    return mm.missing


# ------------------------------------------------------------------------------------- shipped weights
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(manifest: Path = MANIFEST) -> list[dict[str, Any]]:
    """The manifest's entries (an empty list if there is no manifest)."""
    if not manifest.is_file():
        return []
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RecvosError(f"{manifest}: unreadable weights manifest ({e}); reinstall recvos") from e
    entries = data.get("entries", []) if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise RecvosError(f"{manifest}: 'entries' must be a list of objects; reinstall recvos")
    return entries


def default_entry(kind: str = "one-shot", manifest: Path = MANIFEST) -> dict[str, Any]:
    """The manifest entry of the shipped model of ``kind`` ("one-shot", "zero-shot" or "interactive")."""
    if kind not in KINDS:
        raise RecvosError(f"unknown default model kind {kind!r}; use one of {', '.join(KINDS)}")
    for entry in read_manifest(manifest):
        if entry.get("kind", entry.get("name")) == kind:
            return entry
    raise RecvosError(
        f"no shipped {kind} weights in {manifest}; pass a checkpoint path or a model name "
        "(e.g. --model path/to/model.pt)"
    )


def default_checkpoint_path(kind: str = "one-shot", manifest: Path = MANIFEST) -> Path:
    """Path of the shipped checkpoint for ``kind``, after checking its SHA-256 against the manifest."""
    entry = default_entry(kind, manifest)
    if "file" not in entry or "sha256" not in entry:
        raise RecvosError(
            f"{manifest}: entry {entry.get('name')!r} lacks 'file' or 'sha256'; reinstall recvos"
        )
    path = manifest.parent / entry["file"]
    if not path.is_file():
        raise RecvosError(f"{path}: shipped {kind} weights are missing; reinstall recvos or pass --model")
    digest = sha256_file(path)
    if digest != entry["sha256"].lower():
        raise RecvosError(
            f"{path}: SHA-256 {digest[:12]}… does not match the manifest ({entry['sha256'][:12]}…); "
            "the file is corrupt or was replaced: reinstall recvos"
        )
    return path


def export_weights(
    checkpoint: str | Path, out_file: str | Path, half: bool = True, memory: int | None = None
) -> Path:
    """Write the model part of ``checkpoint`` to ``out_file`` (fp16 floats when ``half``; gzip for ``.gz``).
    ``memory``: the frames the exported model's matching memory holds when it runs (its config's
    ``memory``; the weights do not depend on it), for a model trained with a memory."""
    ckpt = read_checkpoint(checkpoint)
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise RecvosError(f"{checkpoint}: not a recvos checkpoint (missing {missing})")
    model = {k: ckpt[k] for k in MODEL_KEYS}
    model["model_config"] = dict(model["model_config"], backbone_weights=None)
    if memory is not None:
        if not model["model_config"].get("memory"):
            raise RecvosError(f"{checkpoint}: --memory {memory}: this model was trained without a memory")
        from recvos.models.memory import check_memory_frames

        check_memory_frames(int(memory), "--memory")
        model["model_config"]["memory"] = int(memory)
    if half:
        model["state_dict"] = {
            k: (v.half() if v.is_floating_point() else v) for k, v in model["state_dict"].items()
        }
    out_file = Path(out_file)
    if out_file.suffix == ".gz":
        buf = io.BytesIO()
        torch.save(model, buf)
        with (
            atomic_write(out_file) as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f,
        ):
            f.write(buf.getvalue())
    else:
        atomic_torch_save(model, out_file)
    return out_file


def add_to_manifest(entry: dict[str, Any], manifest: Path) -> None:
    """Insert or replace (by ``kind``) an entry in the manifest, atomically."""
    entries = [e for e in read_manifest(manifest) if e.get("kind") != entry["kind"]]
    entries.append(entry)
    entries.sort(key=lambda e: e.get("kind", ""))
    with atomic_write(manifest, "w") as f:
        f.write(json.dumps({"format": MANIFEST_FORMAT, "entries": entries}, indent=2) + "\n")


# ---------------------------------------------------------------------------------------- resolution
def resolve_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    kind: str = "one-shot",
    allow_random: bool = False,
    **build_options: Any,
) -> RecurrentVOS:
    """The shipped default of ``kind`` (``None``), a checkpoint path, or a registered model name. A name
    builds a model with random weights, whose masks are meaningless: it is refused unless ``allow_random``
    (``--random-weights``); ``build_options`` apply only there. Returned on the CPU in eval mode."""
    if name_or_path is None:
        if build_options:
            raise RecvosError(
                f"build options {sorted(build_options)} only apply to model names, not the default"
            )
        return load_checkpoint(default_checkpoint_path(kind))
    text = os.fspath(name_or_path)
    path = Path(text)
    names = model_names()
    if path.is_file():
        if build_options:
            raise RecvosError(
                f"{path}: build options {sorted(build_options)} only apply to model names, not checkpoints"
            )
        return load_checkpoint(path)
    if text in names:
        if not allow_random:
            raise RecvosError(
                f"model {text!r} is a name, not trained weights: it would run with random weights and give "
                "meaningless masks; pass a checkpoint (--model path/to/model.pt), omit --model for the shipped "
                "weights, or pass --random-weights (allow_random=True) to run it untrained"
            )
        log.warning("model %s has random weights (no checkpoint given): its masks are meaningless", text)
        return build_model(text, **build_options).eval()
    if path.suffix in (".pt", ".pth", ".ckpt", ".gz") or os.sep in text:
        raise RecvosError(
            f"{path}: checkpoint not found; give an existing file or a model name ({', '.join(names)})"
        )
    raise RecvosError(f"unknown model {text!r}: give a checkpoint path or one of {', '.join(names)}")
