"""Strict state-dict comparison, written once for backbones, checkpoints and warm starts, and a digest of a
state dict's values (the backbone a prompt head or a feature cache was made with)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from recvos.errors import RecvosError

__all__ = ["KeyMismatch", "key_mismatch", "require_match", "count_parameters", "tensor_digest"]


@dataclass(frozen=True)
class KeyMismatch:
    """Keys of a state dict that do not fit a model's own state dict."""

    missing: list[str]
    unexpected: list[str]
    wrong_shape: list[str]

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.wrong_shape)

    def summary(self) -> str:
        """``"missing keys: a, b; shape mismatch: c"`` (at most 3 names per kind)."""

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")

        kinds = (
            ("missing keys", self.missing),
            ("unexpected keys", self.unexpected),
            ("shape mismatch", self.wrong_shape),
        )
        return "; ".join(f"{label}: {few(keys)}" for label, keys in kinds if keys)


def key_mismatch(own: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor]) -> KeyMismatch:
    """How ``other`` differs from ``own`` (both name -> tensor)."""
    return KeyMismatch(
        missing=sorted(set(own) - set(other)),
        unexpected=sorted(set(other) - set(own)),
        wrong_shape=sorted(k for k in set(own) & set(other) if tuple(own[k].shape) != tuple(other[k].shape)),
    )


def require_match(
    own: Mapping[str, torch.Tensor],
    other: Mapping[str, torch.Tensor],
    source: str,
    fix: str,
    allow_missing: bool = False,
) -> KeyMismatch:
    """Raise :class:`RecvosError` ``"<source>: <summary>; <fix>"`` unless ``other`` fits ``own`` (missing keys
    allowed when ``allow_missing``); returns the mismatch (its ``missing`` keys when allowed)."""
    mm = key_mismatch(own, other)
    if mm.unexpected or mm.wrong_shape or (mm.missing and not allow_missing):
        shown = mm if not allow_missing else KeyMismatch([], mm.unexpected, mm.wrong_shape)
        raise RecvosError(f"{source}: {shown.summary()}; {fix}")
    return mm


def count_parameters(modules: nn.Module | Iterable[nn.Module], trainable_only: bool = False) -> int:
    """Number of parameters of one or several modules (shared tensors counted once)."""
    if isinstance(modules, nn.Module):
        modules = [modules]
    seen = {
        id(p): p.numel() for m in modules for p in m.parameters() if p.requires_grad or not trainable_only
    }
    return sum(seen.values())


def tensor_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and values (floats as fp32): the backbone a head was trained on (a
    retrained VOS default whose backbone stayed frozen keeps it), or the backbone a feature cache was built with."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu()
        if t.is_floating_point():
            t = t.float() + 0.0  # -0.0 -> +0.0: equal values, equal digest (training flips signs of zeros)
        h.update(key.encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()
