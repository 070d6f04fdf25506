"""recvos: video object segmentation with recurrent networks (RVOS, S2S).

The public API, named explicitly. Importing this package does nothing else: heavy modules are imported
lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "RecvosError": ("recvos.errors", "RecvosError"),
    "build_model": ("recvos.models.factory", "build_model"),
    "list_models": ("recvos.models.factory", "list_models"),
    "load_checkpoint": ("recvos.models.loading", "load_checkpoint"),
    "save_model": ("recvos.models.loading", "save_model"),
    "load_model": ("recvos.inference.segmenter", "load_model"),
    "Segmenter": ("recvos.inference.segmenter", "Segmenter"),
    "open_frames": ("recvos.data.frames", "open_frames"),
    "read_mask": ("recvos.data.masks", "read_mask"),
    "write_mask": ("recvos.data.masks", "write_mask"),
    "evaluate_sequences": ("recvos.evaluation.protocols", "evaluate_sequences"),
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from recvos.data.frames import open_frames  # noqa: F401
    from recvos.data.masks import read_mask, write_mask  # noqa: F401
    from recvos.errors import RecvosError  # noqa: F401
    from recvos.evaluation.protocols import evaluate_sequences  # noqa: F401
    from recvos.inference.segmenter import Segmenter, load_model  # noqa: F401
    from recvos.models.factory import build_model, list_models  # noqa: F401
    from recvos.models.loading import load_checkpoint, save_model  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'recvos' has no attribute {name!r}")
