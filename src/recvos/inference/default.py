"""The shipped default weights: a manifest in ``recvos/weights/manifest.json`` and checksum-verified lookup.

The manifest is a JSON object ``{"format": "recvos-weights/1", "entries": [...]}``; each entry is
``{name, kind, file, sha256, architecture, preset, data, commit, metrics}`` where ``kind`` is
``"one-shot"`` or ``"zero-shot"`` (the entry used by :func:`default_checkpoint_path`), ``file`` is relative
to the weights folder and ``sha256`` is the hex digest of that file. Entries without ``kind`` match by
``name``. Nothing is downloaded: a missing or altered file is an error that says so.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recvos.errors import RecvosError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
KINDS = ("one-shot", "zero-shot")


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
    """The manifest entry of the default model of ``kind`` ("one-shot" or "zero-shot")."""
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
        raise RecvosError(f"{manifest}: entry {entry.get('name')!r} lacks 'file' or 'sha256'; reinstall recvos")
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
