"""Strict state-dict comparison, written once for backbones, checkpoints and warm starts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from recvos.errors import RecvosError

__all__ = ["KeyMismatch", "key_mismatch", "require_match", "count_parameters"]


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
