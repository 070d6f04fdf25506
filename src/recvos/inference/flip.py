"""Test-time augmentation by horizontal flip (``Segmenter(flip=True)``, ``--flip``).

The model runs on each frame and on its mirror image as a batch of two, each with its own recurrent state
and matching memory. After every frame the two predictions are merged (the mirror's logits flipped back,
then averaged) and the merged masks are what both copies get as their previous masks (the mirror's
flipped), so the two runs cannot drift apart: one video, one set of masks, two views of every frame. About
1.7x the time of a plain run on 2 CPU cores (BENCHMARKS.md, "Flip at test time").

:func:`unroll_flipped` wraps :meth:`~recvos.models.base.RecurrentVOS.unroll` with any feed; the results it
yields are those of a batch of one, as a plain ``unroll`` over single frames gives.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from recvos.models.base import FrameResult, RecurrentVOS
from recvos.models.feed import Feed, ObjectChange

__all__ = ["FlipFeed", "unroll_flipped", "with_mirror", "merge_mirror"]


def with_mirror(x: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [2B, ...]: x, then x flipped along its last (width) axis."""
    return torch.cat([x, x.flip(-1)], 0)


def merge_mirror(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`with_mirror` up to averaging: [2B, ...] -> [B, ...], the mean of the first half
    and the second half flipped back (objectness [2B, O] is averaged as it is: it has no width axis)."""
    b = x.shape[0] // 2
    second = x[b:].flip(-1) if x.dim() > 2 else x[b:]
    return (x[:b] + second) / 2


class FlipFeed:
    """Wraps a feed for a batch of (frames, mirrored frames): entering masks get their mirror image, and the
    inner feed sees (and answers) the merged logits, whose answer is fed back to both copies."""

    def __init__(self, inner: Feed) -> None:
        self.inner = inner
        self.zero_shot = inner.zero_shot

    def objects(self, t: int) -> ObjectChange | None:
        change = self.inner.objects(t)
        if change is None or change.masks is None:
            return change
        reset = None if change.reset is None else change.reset.repeat(2, 1)
        return ObjectChange(keep=change.keep, masks=with_mirror(change.masks), reset=reset)

    def feedback(self, t: int, logits: torch.Tensor) -> torch.Tensor:
        return with_mirror(self.inner.feedback(t, merge_mirror(logits)))


def unroll_flipped(model: RecurrentVOS, frames: Iterable[torch.Tensor], feed: Feed) -> Iterator[FrameResult]:
    """``model.unroll(frames, feed)`` with every frame [B, 3, H, W] seen as itself and as its mirror image;
    yields per frame the merged logits and objectness, the masks fed back (the inner feed's answer) and the
    recurrent state of both copies (batch 2B)."""
    for r in model.unroll((with_mirror(x) for x in frames), FlipFeed(feed)):
        if r.logits is None:
            yield r
            continue
        b = r.logits.shape[0] // 2
        yield FrameResult(r.t, merge_mirror(r.logits), merge_mirror(r.objectness), r.fed[:b], r.state)
