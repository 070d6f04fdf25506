"""Optimizer and learning-rate schedule: AdamW with a separate backbone learning rate, warmup + cosine."""

from __future__ import annotations

import math

import torch
from torch import nn

from recvos.models.backbones import Backbone
from recvos.training.config import OptimConfig

__all__ = ["WarmupCosine", "backbone_param_names", "param_groups", "build_optimizer"]


class WarmupCosine:
    """LambdaLR factor: linear warmup to 1 over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.01, schedule: str = "cosine") -> None:
        self.warmup, self.total, self.min_ratio, self.schedule = warmup, total, min_ratio, schedule

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "constant":
            return 1.0
        span = max(1, self.total - self.warmup)
        p = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * p))


def backbone_param_names(model: nn.Module) -> set[str]:
    """Names of the parameters inside the model's feature extractors (:class:`Backbone` submodules: RVOS's
    ``backbone``, S2S's ``encoder`` and ``initializer``)."""
    names: set[str] = set()
    for mname, mod in model.named_modules():
        if isinstance(mod, Backbone):
            names.update(f"{mname}.{pn}" if mname else pn for pn, _ in mod.named_parameters())
    return names


def param_groups(model: nn.Module, lr: float, backbone_lr: float | None, weight_decay: float) -> list[dict]:
    """AdamW groups: backbone / rest, each split into decayed weights and undecayed biases/norms."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    backbone = backbone_param_names(model)
    for name, p in model.named_parameters():
        groups.setdefault((name in backbone, p.ndim <= 1), []).append(p)
    out = []
    for (bb, nodecay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": (backbone_lr if backbone_lr is not None else lr) if bb else lr,
                "weight_decay": 0.0 if nodecay else weight_decay,
                "name": ("backbone" if bb else "head") + ("_nodecay" if nodecay else ""),
            }
        )
    return out


def build_optimizer(
    model: nn.Module, oc: OptimConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over :func:`param_groups` and its :class:`WarmupCosine` LambdaLR."""
    optimizer = torch.optim.AdamW(
        param_groups(model, oc.lr, oc.backbone_lr, oc.weight_decay), lr=oc.lr, betas=tuple(oc.betas)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(oc.warmup_steps, total_steps, oc.min_lr_ratio, oc.schedule)
    )
    return optimizer, scheduler
