"""recvos.models: backbones, the ConvLSTM cell, RVOS and S2S behind one recurrent interface.

Importing this package does nothing else: the names below are imported lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "RecurrentVOS": "recvos.models.base",
    "StepOutput": "recvos.models.base",
    "FrameResult": "recvos.models.base",
    "ClipOutput": "recvos.models.base",
    "RecurrentState": "recvos.models.state",
    "Feed": "recvos.models.feed",
    "ObjectChange": "recvos.models.feed",
    "ClipFeed": "recvos.models.feed",
    "ConvLSTMCell": "recvos.models.convlstm",
    "Backbone": "recvos.models.backbones",
    "build_backbone": "recvos.models.backbones",
    "list_backbones": "recvos.models.backbones",
    "RVOS": "recvos.models.rvos",
    "RVOSState": "recvos.models.rvos",
    "S2S": "recvos.models.s2s",
    "S2SState": "recvos.models.s2s",
    "ModelSpec": "recvos.models.factory",
    "ModelInfo": "recvos.models.factory",
    "register_model": "recvos.models.factory",
    "build_model": "recvos.models.factory",
    "list_models": "recvos.models.factory",
    "model_names": "recvos.models.factory",
    "model_to_checkpoint": "recvos.models.loading",
    "model_from_checkpoint": "recvos.models.loading",
    "save_model": "recvos.models.loading",
    "load_checkpoint": "recvos.models.loading",
    "resolve_model": "recvos.models.loading",
    "warm_start": "recvos.models.loading",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recvos.models' has no attribute {name!r}")
