"""recvos.training: the training loop (CPU, one GPU, torchrun DDP), config, checkpoints.

``from recvos.training import load_config, train``; ``train(load_config("configs/smoke_synthetic.yaml"))``.
Importing this package imports nothing heavy: names resolve on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Config": "recvos.training.config",
    "load_config": "recvos.training.config",
    "apply_overrides": "recvos.training.config",
    "config_to_dict": "recvos.training.config",
    "save_config": "recvos.training.config",
    "Trainer": "recvos.training.trainer",
    "TrainResult": "recvos.training.trainer",
    "train": "recvos.training.trainer",
    "resume_config": "recvos.training.trainer",
    "validate": "recvos.training.validation",
    "CheckpointManager": "recvos.training.checkpoint",
    "atomic_save": "recvos.training.checkpoint",
    "load_training_checkpoint": "recvos.training.checkpoint",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recvos.training' has no attribute {name!r}")
