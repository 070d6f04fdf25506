"""Training checkpoints: atomic writes, rotation (last K + best), RNG state capture, strict loading.

A training checkpoint is a dict with the model factory's keys (``format``, ``model_name``, ``model_config``,
``state_dict``, so :func:`recvos.models.loading.load_checkpoint` reads it) plus ``optimizer``, ``scheduler``,
``scaler``, ``step``, ``rng``, ``sampler`` and the resolved ``config``. Everything is plain tensors, numbers,
strings, lists and dicts so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recvos.errors import RecvosError
from recvos.fileio import atomic_path, atomic_torch_save, remove_stale_temps

log = logging.getLogger(__name__)

_STEP_RE = re.compile(r"^step_(\d{8,})\.pt$")


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (:func:`recvos.fileio.atomic_torch_save`). On any OSError (full
    disk, permissions) whatever was at ``path`` before is left untouched and a RecvosError names the file."""
    try:
        atomic_torch_save(obj, path)
    except OSError as e:
        raise RecvosError(
            f"could not write checkpoint {path} ({e.strerror or e}); the previous checkpoint is kept — free disk "
            "space or choose another --out"
        ) from e


def load_training_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`atomic_save` (weights_only=True); RecvosError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise RecvosError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise RecvosError(
            f"checkpoint {path} is unreadable ({e.__class__.__name__}); delete it to resume from an earlier one"
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise RecvosError(f"checkpoint {path} is not a recvos checkpoint (no state_dict)")
    return ckpt


def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) global RNG states as weights_only-loadable values."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            log.warning(
                "CUDA RNG states saved for %d devices, %d present: not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


class CheckpointManager:
    """Checkpoints of one run in ``run_dir/checkpoints``: ``step_XXXXXXXX.pt`` (last ``keep_last``) and ``best.pt``."""

    def __init__(self, run_dir: str | Path, keep_last: int = 3) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = max(1, keep_last)

    def path_for(self, step: int) -> Path:
        return self.dir / f"step_{step:08d}.pt"

    @property
    def best_path(self) -> Path:
        return self.dir / "best.pt"

    def list(self) -> list[tuple[int, Path]]:
        """(step, path) of the step checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, payload: dict, step: int) -> Path:
        """Write ``step_<step>.pt`` atomically, then delete the oldest beyond ``keep_last``."""
        path = self.path_for(step)
        atomic_save(payload, path)
        for _, old in self.list()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def save_best(self, step_path: Path) -> Path:
        """Make ``best.pt`` a copy of an already written step checkpoint (a hard link when the file system
        allows, atomic either way)."""
        try:
            with atomic_path(self.best_path) as tmp:
                tmp.unlink()
                try:
                    os.link(step_path, tmp)
                except OSError:
                    shutil.copyfile(step_path, tmp)
        except OSError as e:
            raise RecvosError(
                f"could not write {self.best_path} ({e.strerror or e}); the previous best is kept"
            ) from e
        return self.best_path

    def clean_temp(self) -> None:
        """Remove temp files left by a crash during a write."""
        if self.dir.is_dir():
            remove_stale_temps(self.dir)

    def latest(self, map_location: str | torch.device = "cpu") -> tuple[dict, Path] | None:
        """The newest readable step checkpoint (an unreadable one is skipped with a warning), or None."""
        for _, p in reversed(self.list()):
            try:
                return load_training_checkpoint(p, map_location), p
            except RecvosError as e:
                log.warning("skipping %s: %s", p, e)
        return None
