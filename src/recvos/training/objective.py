"""What one training clip computes: the model's loop over the clip (:class:`ClipModel`, the module DDP
wraps) and where the loss looks (:func:`loss_weights`)."""

from __future__ import annotations

import torch
from torch import nn

from recvos.models.backbones import with_features
from recvos.models.base import RecurrentVOS
from recvos.models.feed import ClipFeed, first_valid

__all__ = ["ClipModel", "loss_weights"]


class ClipModel(nn.Module):
    """A :class:`RecurrentVOS` run over a batch of clips by its own ``unroll`` with a
    :class:`~recvos.models.feed.ClipFeed`, so DDP sees one ``forward`` per batch.

    ``teacher=True``: ground-truth previous masks where known; ``False``: the model's own (Mask-ST+).
    ``channels_last``: each frame's image or cached features reach the model channels-last (NHWC), to match
    weights converted with ``model.to(memory_format=torch.channels_last)`` (``train.channels_last``).
    """

    def __init__(self, model: RecurrentVOS, channels_last: bool = False) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last

    def forward(
        self,
        frames: torch.Tensor | None,
        masks: torch.Tensor,
        valid: torch.Tensor,
        teacher: bool,
        features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B,T,3,H,W], masks [B,T,O,H,W], valid [B,T,O] -> (logits [B,T,O',H,W], objectness [B,T,O'])
        with O' = O one-shot, ``max_objects`` zero-shot. ``features`` (a feature cache's [f4, f8, f16, f32],
        each [B,T,C,h,w]) replace the frames: the backbone is not run."""
        zero_shot = self.model.mode == "zero-shot"
        feed = ClipFeed(zero_shot=True) if zero_shot else ClipFeed(masks, valid, teacher=teacher)
        B, T = masks.shape[:2]

        def at(x: torch.Tensor, t: int) -> torch.Tensor:  # frame t of [B, T, C, h, w], in the model's layout
            return x[:, t].contiguous(memory_format=torch.channels_last) if self.channels_last else x[:, t]

        if features is not None:
            frames = [with_features(B, *masks.shape[-2:], [at(f, t) for f in features]) for t in range(T)]
        elif self.channels_last:
            frames = [at(frames, t) for t in range(T)]
        out = self.model.unroll_clip(frames, feed)
        return out.logits, out.objectness


def loss_weights(
    valid: torch.Tensor, present: torch.Tensor, zero_shot: bool, first_frame: bool
) -> torch.Tensor:
    """Where the mask loss applies: valid [B,T,O], present [B,O] -> bool [B,T,O].

    One-shot without ``first_frame``: not on an object's first valid frame (its mask is the model's input).
    """
    w = valid & present[:, None, :]
    if not zero_shot and not first_frame:
        w = w & ~first_valid(w)
    return w
