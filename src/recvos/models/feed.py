"""Feeds: what :meth:`~recvos.models.base.RecurrentVOS.unroll` is told on each frame.

A feed answers two questions per frame t:

- :meth:`Feed.objects` — before the step: which slots stay, which objects enter (appended as new slots,
  initialised by ``init_state`` on frame t with their masks), or which existing slots are re-initialised
  (``reset``; batched training clips, where every clip has the same number of slots).
- :meth:`Feed.feedback` — after the step: the masks the model gets as its previous masks on frame t + 1:
  its own probabilities, the ground truth where it is known (teacher forcing), or a user's prompt.

:class:`ClipFeed` serves training and online learning (a clip with its ground truth). The streaming
segmenter's feed reads the user's prompts (:class:`recvos.inference.segmenter.PromptFeed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["Feed", "ObjectChange", "ClipFeed", "FirstFrameFeed", "first_valid"]


@dataclass
class ObjectChange:
    """Changes to the object slots before frame t (all optional; applied in this order).

    keep: indices of the slots that stay (the others are dropped).
    masks: [B, K, H, W] masks of entering objects. Without ``reset`` they are appended as K new slots;
        with ``reset`` (bool [B, O], K = O) they re-initialise the slots where ``reset`` is True.
    """

    keep: list[int] | None = None
    masks: torch.Tensor | None = None
    reset: torch.Tensor | None = None


class Feed(Protocol):
    #: discover objects (the model's zero-shot slots) instead of being given them
    zero_shot: bool

    def objects(self, t: int) -> ObjectChange | None:
        """Changes to the object slots before frame t, or None."""
        ...

    def feedback(self, t: int, logits: torch.Tensor) -> torch.Tensor:
        """logits [B, O, H, W] of frame t -> the masks [B, O, H, W] fed back to frame t + 1."""
        ...


def first_valid(valid: torch.Tensor) -> torch.Tensor:
    """valid [B, T, O] bool -> bool [B, T, O], True at the first valid frame of each object."""
    before = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], 1).cumsum(1) > 0
    return valid & ~before


class ClipFeed:
    """A clip with its ground truth: masks [B, T, O, H, W], valid [B, T, O] (the object is annotated and
    has appeared; see :mod:`recvos.data.clips`).

    One-shot: the objects valid on frame 0 enter there (every slot is created on frame 0, empty if its
    object appears later); an object appearing on frame t > 0 re-initialises its slot there with its
    ground truth, as a user adds an object at inference. Fed back: the ground truth where it is known —
    wherever valid with ``teacher=True`` (teacher forcing), only on the entering frame with
    ``teacher=False`` (Mask-ST+: the model's own probabilities, gradients flowing through them) — and
    nothing for objects that have not appeared yet. Zero-shot: no objects are given; the model's own
    probabilities are fed back.
    """

    def __init__(
        self,
        masks: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
        *,
        teacher: bool = True,
        zero_shot: bool = False,
    ) -> None:
        self.zero_shot = zero_shot
        self.teacher = teacher
        if zero_shot:
            return
        if masks is None:
            raise ValueError("a one-shot ClipFeed needs the clip's masks")
        if valid is None:
            valid = masks.flatten(3).amax(-1) > 0
        self.masks = masks
        self.valid = valid.bool()
        self.intro = first_valid(self.valid)
        self.appeared = self.valid.cumsum(1) > 0

    def objects(self, t: int) -> ObjectChange | None:
        if self.zero_shot:
            return None
        if t == 0:
            return ObjectChange(masks=self.masks[:, 0] * self.valid[:, 0, :, None, None].to(self.masks.dtype))
        intro = self.intro[:, t]
        if bool(intro.any()):
            return ObjectChange(masks=self.masks[:, t], reset=intro)
        return None

    def feedback(self, t: int, logits: torch.Tensor) -> torch.Tensor:
        own = torch.sigmoid(logits)
        if self.zero_shot:
            return own
        gt = self.masks[:, t].to(own.dtype)
        known = (self.valid[:, t] if self.teacher else self.intro[:, t])[..., None, None]
        own = own * self.appeared[:, t, :, None, None].to(own.dtype)
        return torch.where(known, gt, own)


class FirstFrameFeed:
    """Objects given once, on frame 0 (masks [B, O, H, W]; they are also frame 0's result, as a prompt is),
    then the model's own probabilities fed back: plain tensor-level inference, e.g. for benchmarks.
    Zero-shot when ``masks`` is None."""

    def __init__(self, masks: torch.Tensor | None) -> None:
        self.masks = masks
        self.zero_shot = masks is None

    def objects(self, t: int) -> ObjectChange | None:
        return ObjectChange(masks=self.masks) if t == 0 and self.masks is not None else None

    def feedback(self, t: int, logits: torch.Tensor) -> torch.Tensor:
        if t == 0 and self.masks is not None:
            return self.masks.to(logits.dtype)
        return torch.sigmoid(logits)
