"""recvos.inference: the streaming segmenter, online learning, overlays and whole-video/dataset jobs.

Names are imported lazily on first access; importing this package does nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Segmenter": "recvos.inference.segmenter",
    "InferenceState": "recvos.inference.segmenter",
    "PromptFeed": "recvos.inference.segmenter",
    "load_model": "recvos.inference.segmenter",
    "processing_size": "recvos.inference.inputs",
    "FinetuneResult": "recvos.inference.online",
    "finetune": "recvos.inference.online",
    "blend": "recvos.inference.overlay",
    "OverlayWriter": "recvos.inference.overlay",
    "segment_to_folder": "recvos.inference.video",
    "predict_dataset": "recvos.inference.dataset",
    "open_sequence": "recvos.inference.dataset",
    "shard_names": "recvos.inference.dataset",
    "OnnxModel": "recvos.inference.onnx",
    "export_onnx": "recvos.inference.onnx",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recvos.inference' has no attribute {name!r}")
