"""What the jobs write and report: output folders checked before any work, one-line write errors,
probability PNGs, zips, and the run report.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from recvos.errors import RecvosError
from recvos.fileio import atomic_write

log = logging.getLogger(__name__)


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...


@dataclass
class RunReport:
    """Frames written, seconds spent propagating (decode, model, write) and online learning."""

    frames: int
    seconds: float
    finetune_seconds: float = 0.0
    sequences: int = 1

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def merge_reports(reports: Sequence[RunReport]) -> RunReport:
    """One report for runs made side by side (the ranks of a distributed run): frames and sequences add up,
    the times are the slowest run's, so ``fps`` is the throughput of them all."""
    return RunReport(
        frames=sum(r.frames for r in reports),
        seconds=max((r.seconds for r in reports), default=0.0),
        finetune_seconds=max((r.finetune_seconds for r in reports), default=0.0),
        sequences=sum(r.sequences for r in reports),
    )


def make_folder(path: Path, what: str) -> bool:
    """Create ``path`` (and parents); True if it was created. RecvosError naming it on failure."""
    if path.is_dir():
        return False
    if path.exists():
        raise RecvosError(f"{path}: exists and is not a folder; choose another {what} path")
    try:
        path.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as e:
        raise RecvosError(
            f"{path}: cannot create the {what} folder ({e.strerror or e}); choose a folder you can write to"
        ) from None
    return True


def probe_writable(folder: Path, what: str) -> None:
    """RecvosError unless a file can be created in ``folder`` (tried, not guessed: permissions, read-only
    or full file systems all fail here, before any work)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".recvos-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise RecvosError(
            f"{folder}: cannot write the {what} there ({e.strerror or e}); choose a folder you can write to"
        ) from None


def check_output_dir(path: Path, overwrite: bool, what: str = "output", allow_existing: bool = False) -> bool:
    """Refuse an existing non-empty folder unless ``overwrite`` (or ``allow_existing``, for resuming);
    create it and check that it is writable. Returns True if the folder was created."""
    if path.exists() and not path.is_dir():
        raise RecvosError(f"{path}: exists and is not a folder; choose another {what} path")
    if path.is_dir() and not (overwrite or allow_existing) and any(path.iterdir()):
        raise RecvosError(
            f"{path}: {what} folder exists and is not empty; pass --overwrite (or --resume to continue an "
            "interrupted run) or choose another folder"
        )
    created = make_folder(path, what)
    probe_writable(path, f"{what} files")
    return created


def write_failed(path: Path, e: OSError, done: str) -> RecvosError:
    """The one-line error for a failed write (full disk, permissions): what failed, what is kept, the fix."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space or write elsewhere"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make the folder writable or write elsewhere"
    else:
        fix = "check the disk and the folder"
    return RecvosError(f"{path}: cannot write ({e.strerror or e}); {fix}; {done}")


def write_probs(folder: Path, name: str, obj_ids: Sequence[int], probs: np.ndarray) -> None:
    """Per-object probabilities as 8-bit greyscale PNGs ``folder/<obj_id>/<name>.png`` (0..255 = 0..1)."""
    for o, p in zip(obj_ids, probs, strict=True):
        img = Image.fromarray(np.clip(np.rint(p * 255), 0, 255).astype(np.uint8), mode="L")
        with atomic_write(folder / str(o) / f"{name}.png") as f:
            img.save(f, format="PNG")


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip ``folder`` (its name as the top-level entry, e.g. ``Annotations/<seq>/<frame>.png``) atomically."""
    with atomic_write(zip_path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, Path(folder.name) / p.relative_to(folder))
    log.info("wrote %s", zip_path)
    return zip_path
