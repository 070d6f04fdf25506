"""recvos.models: backbones, the ConvLSTM cell, RVOS and S2S behind one recurrent interface.

Importing this package does nothing else: the names below are imported lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "RecurrentVOS": "recvos.models.base",
    "RecurrentState": "recvos.models.base",
    "StepOutput": "recvos.models.base",
    "ClipOutput": "recvos.models.base",
    "ConvLSTMCell": "recvos.models.convlstm",
    "Backbone": "recvos.models.backbones",
    "build_backbone": "recvos.models.backbones",
    "list_backbones": "recvos.models.backbones",
    "RVOS": "recvos.models.rvos",
    "RVOSState": "recvos.models.rvos",
    "S2S": "recvos.models.s2s",
    "S2SState": "recvos.models.s2s",
    "ModelInfo": "recvos.models.factory",
    "build_model": "recvos.models.factory",
    "list_models": "recvos.models.factory",
    "model_names": "recvos.models.factory",
    "model_to_checkpoint": "recvos.models.factory",
    "model_from_checkpoint": "recvos.models.factory",
    "save_model": "recvos.models.factory",
    "load_checkpoint": "recvos.models.factory",
}

__all__ = [
    "RecurrentVOS", "RecurrentState", "StepOutput", "ClipOutput", "ConvLSTMCell", "Backbone", "build_backbone",
    "list_backbones", "RVOS", "RVOSState", "S2S", "S2SState", "ModelInfo", "build_model", "list_models",
    "model_names", "model_to_checkpoint", "model_from_checkpoint", "save_model", "load_checkpoint",
]

if TYPE_CHECKING:  # pragma: no cover
    from recvos.models.backbones import Backbone, build_backbone, list_backbones
    from recvos.models.base import ClipOutput, RecurrentState, RecurrentVOS, StepOutput
    from recvos.models.convlstm import ConvLSTMCell
    from recvos.models.factory import (
        ModelInfo,
        build_model,
        list_models,
        load_checkpoint,
        model_from_checkpoint,
        model_names,
        model_to_checkpoint,
        save_model,
    )
    from recvos.models.rvos import RVOS, RVOSState
    from recvos.models.s2s import S2S, S2SState


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recvos.models' has no attribute {name!r}")
