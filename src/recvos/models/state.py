"""The recurrent state type shared by every model, with the per-object operations the loop needs.

Every tensor of a state is laid out ``[B, O, ...]`` (batch, then object slot), so adding, dropping or
re-initialising objects is the same operation for every model: no model-specific hooks, no shape probing.
Fields may be tensors, lists/tuples of tensors (one per decoder level), or ``None`` (a feature a model was
built without).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

__all__ = ["RecurrentState"]

OBJECT_DIM = 1


def _map(fn: Callable[..., torch.Tensor], *values: Any) -> Any:
    """Apply ``fn`` to matching tensors of several values of one field (recursing into lists/tuples)."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        return fn(*values)
    if isinstance(first, (list, tuple)):
        return type(first)(_map(fn, *items) for items in zip(*values, strict=True))
    if any(v is not None for v in values):
        raise TypeError(f"state fields differ in kind: {[type(v).__name__ for v in values]}")
    return None


@dataclass
class RecurrentState:
    """Base class of model states: a dataclass whose fields are tensors ``[B, O, ...]`` (or lists/tuples of
    them, or None). ``num_objects`` is O."""

    num_objects: int

    def _tensor_fields(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "num_objects"]

    def _rebuild(self, num_objects: int, fn: Callable[..., torch.Tensor], *others: RecurrentState) -> Any:
        for other in others:
            if type(other) is not type(self):
                raise TypeError(f"cannot combine {type(self).__name__} with {type(other).__name__}")
        values = {
            name: _map(fn, getattr(self, name), *(getattr(o, name) for o in others))
            for name in self._tensor_fields()
        }
        return type(self)(num_objects=num_objects, **values)

    def map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
        """The same state with ``fn`` applied to every tensor (e.g. ``lambda t: t.to("cuda")``)."""
        return self._rebuild(self.num_objects, fn)

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """The state's tensors by name, in field order (a list field ``hidden`` gives ``hidden.0``,
        ``hidden.1``, ...; None fields are left out): the explicit inputs/outputs of an exported step."""
        out: dict[str, torch.Tensor] = {}
        for name in self._tensor_fields():
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                out[name] = value
            elif isinstance(value, (list, tuple)):
                out.update({f"{name}.{i}": t for i, t in enumerate(value)})
        return out

    @classmethod
    def from_named_tensors(cls, num_objects: int, tensors: dict[str, torch.Tensor]) -> Any:
        """The inverse of :meth:`named_tensors` (fields not named stay at their default)."""
        values: dict[str, Any] = {}
        for key, t in tensors.items():
            name, _, index = key.partition(".")
            if index:
                values.setdefault(name, []).append(t)
            else:
                values[name] = t
        return cls(num_objects=num_objects, **values)

    def detach(self) -> Any:
        """Cut the autograd graph (truncated back-propagation through time)."""
        return self.map_tensors(torch.Tensor.detach)

    def cat_objects(self, other: RecurrentState) -> Any:
        """This state's objects followed by ``other``'s (same model, batch and frame size)."""
        return self._rebuild(
            self.num_objects + other.num_objects,
            lambda a, b: torch.cat([a, b.to(a.dtype)], OBJECT_DIM),
            other,
        )

    def select_objects(self, index: torch.Tensor | list[int]) -> Any:
        """Only the object slots ``index`` (in that order)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return self._rebuild(int(index.numel()), lambda a: a.index_select(OBJECT_DIM, index.to(a.device)))

    def where_objects(self, which: torch.Tensor, other: RecurrentState) -> Any:
        """``other``'s slots where ``which`` [B, O] is True, this state's elsewhere (re-initialise objects)."""
        if other.num_objects != self.num_objects:
            raise ValueError(
                f"where_objects needs states with equal O ({self.num_objects} vs {other.num_objects})"
            )

        def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            w = which.to(a.device).view(*which.shape, *([1] * (a.dim() - 2)))
            return torch.where(w, b.to(a.dtype), a)

        return self._rebuild(self.num_objects, pick, other)
