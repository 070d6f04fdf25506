"""The recurrent interface shared by every recvos model (RVOS and S2S).

A model is used in three calls:

- ``state = model.init_state(frame0, masks0)`` — frame0 [B, 3, H, W] float RGB in [0, 1]; masks0
  [B, O, H, W] float {0,1} for one-shot, or ``None`` for zero-shot (then O = ``model.max_objects``).
- ``out = model.step(frame, state, prev_masks)`` — one frame; ``prev_masks`` [B, O, H, W] is the previous
  frame's (ground-truth or predicted) per-object masks, or ``None`` for models that do not take them.
  Returns :class:`StepOutput` (logits [B, O, H, W] at the input size, objectness [B, O], the new state).
- ``model.forward_clip(frames, first_masks, teacher_masks)`` — the training unroll, built on ``step`` so
  training and inference share one code path.

Every model is an ``nn.Module`` subclass of :class:`RecurrentVOS`; ``model.name`` and ``model.config``
(the keyword arguments it was built with) are what the factory stores in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn


@dataclass
class RecurrentState:
    """Base class of model states: a dataclass of tensors (or lists/tuples of tensors).

    ``num_objects`` is O. Subclasses add their tensors. ``map_tensors`` lets callers move or slice a state
    without knowing its fields (e.g. ``state.map_tensors(lambda t: t.to("cuda"))``).
    """

    num_objects: int

    def map_tensors(self, fn) -> RecurrentState:
        def apply(v):
            if isinstance(v, torch.Tensor):
                return fn(v)
            if isinstance(v, (list, tuple)):
                return type(v)(apply(x) for x in v)
            return v

        return type(self)(**{f.name: apply(getattr(self, f.name)) for f in fields(self)})

    def detach(self) -> RecurrentState:
        """Cut the autograd graph (truncated back-propagation through time)."""
        return self.map_tensors(lambda t: t.detach())


@dataclass
class StepOutput:
    logits: torch.Tensor  # [B, O, H, W] mask logits at the input size
    objectness: torch.Tensor  # [B, O] probability that slot o holds an object
    state: RecurrentState


@dataclass
class ClipOutput:
    logits: torch.Tensor  # [B, T, O, H, W]
    objectness: torch.Tensor  # [B, T, O]


class RecurrentVOS(nn.Module):
    """Base class: subclasses implement ``init_state`` and ``step``; ``forward_clip`` is shared."""

    name: str = "recurrent-vos"
    #: True if ``step`` consumes the previous frame's masks (one-shot RVOS, S2S with the ablation switch).
    uses_prev_masks: bool = True
    #: Number of slots used in zero-shot mode.
    max_objects: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    def init_state(self, frame: torch.Tensor, masks: torch.Tensor | None) -> RecurrentState:  # pragma: no cover
        raise NotImplementedError

    def step(
        self, frame: torch.Tensor, state: RecurrentState, prev_masks: torch.Tensor | None
    ) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def forward_clip(
        self,
        frames: torch.Tensor,
        first_masks: torch.Tensor | None,
        teacher_masks: torch.Tensor | None = None,
        include_first: bool = True,
    ) -> ClipOutput:
        """Unroll over a clip.

        frames [B, T, 3, H, W]; first_masks [B, O, H, W] or None (zero-shot); teacher_masks
        [B, T, O, H, W] or None. With teacher masks, frame t receives ``teacher_masks[:, t-1]`` as its
        previous masks (teacher forcing); without, it receives the model's own sigmoid prediction of
        frame t-1 (RVOS "Mask-ST+", gradients flow through it). Frame 0 is segmented too (with the first
        masks as previous masks) when ``include_first``; its output is index 0 of the result.
        """
        B, T = frames.shape[:2]
        state = self.init_state(frames[:, 0], first_masks)
        prev = first_masks
        if prev is None and self.uses_prev_masks:
            prev = frames.new_zeros(B, state.num_objects, *frames.shape[-2:])
        logits, objectness = [], []
        for t in range(0 if include_first else 1, T):
            out = self.step(frames[:, t], state, prev)
            state = out.state
            logits.append(out.logits)
            objectness.append(out.objectness)
            if teacher_masks is not None:
                prev = teacher_masks[:, t]
            else:
                prev = torch.sigmoid(out.logits)
        return ClipOutput(logits=torch.stack(logits, 1), objectness=torch.stack(objectness, 1))
