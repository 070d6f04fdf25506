"""Atomic file writes, written once for every output recvos produces (masks, checkpoints, configs, zips,
videos, reports, the weights manifest).

A file is written to a temporary sibling ``.<name>.<random>.tmp`` in the same folder, flushed and fsynced,
then renamed over the target (``os.replace``), so a reader never sees half a file and a crash leaves the
previous version (or nothing) in place. The result gets the permissions of any file the user creates
(``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "atomic_torch_save", "TEMP_GLOB", "remove_stale_temps"]

#: glob matching the temporary files of :func:`atomic_path` (to clean up after a crash)
TEMP_GLOB = ".*.tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``suffix`` is appended to the temporary name (e.g. ``".mp4"`` for writers that pick the format from it).
    The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{suffix}.tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kw: Any) -> Iterator[IO]:
    """``with atomic_write(p) as f: f.write(...)``: an open file whose content replaces ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kw) as f:
        yield f


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    with atomic_write(path) as f:
        torch.save(obj, f)


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete leftover temporary files of interrupted atomic writes in ``folder``; returns how many."""
    n = 0
    for p in Path(folder).glob(TEMP_GLOB):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n
