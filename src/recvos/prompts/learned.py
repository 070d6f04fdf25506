"""The learned method: the shipped prompt head (:mod:`recvos.models.prompt_head`) on the one-shot
default's frozen backbone.

:func:`prompt_maps` is the one encoding of prompts as maps, used by training and inference alike. The
frame is processed with its shorter side at ``max_size`` (240 by default, the VOS default's size) and the
mask is upsampled back. The backbone features of the last frame are kept, so the clicks after the first on
the same frame cost the head only (SAM's split into an image encoder and a prompt decoder).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from recvos.errors import RecvosError
from recvos.prompts.core import METHODS, Prompts, keep_clicked, scale_prompts

__all__ = ["DISK_RADIUS", "prompt_maps", "learned_mask", "load_prompt_head"]

#: radius (pixels at the processing size) of the disk drawn around a click
DISK_RADIUS = 5


def prompt_maps(
    prompts: Prompts, previous: np.ndarray | None = None, radius: int = DISK_RADIUS
) -> np.ndarray:
    """Prompts (validated, in pixels of a ``prompts.size`` frame) -> float32 [4, h, w] maps:
    positive clicks and scribbles, negative ones, the filled box, the previous mask (or the given mask)."""
    h, w = prompts.size
    maps = np.zeros((4, h, w), np.float32)
    for (x, y), lab in zip(prompts.points, prompts.labels, strict=True):
        cv2.circle(maps[0 if lab else 1], (int(x), int(y)), radius, 1.0, -1)
    for line, lab in prompts.scribbles:
        pts = [line.reshape(-1, 1, 2).astype(np.int32)]
        cv2.polylines(maps[0 if lab else 1], pts, False, 1.0, max(1, radius))
    if prompts.box is not None:
        x0, y0, x1, y1 = prompts.box
        maps[2, y0:y1, x0:x1] = 1.0
    prev = previous if previous is not None else prompts.mask
    if prev is not None:
        maps[3] = prev
    return maps


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> torch.nn.Module:
    from recvos.models.loading import load_checkpoint

    model = load_checkpoint(path)
    if getattr(model, "mode", None) != "interactive":
        raise RecvosError(f"{path}: a {model.mode} model, not a prompt head; pass a prompt-head checkpoint")
    return model


def load_prompt_head(model: str | os.PathLike | torch.nn.Module | None = None) -> torch.nn.Module:
    """The shipped prompt head (None), a prompt-head checkpoint path, or a model given as is (eval mode)."""
    if isinstance(model, torch.nn.Module):
        if getattr(model, "mode", None) != "interactive":
            raise RecvosError(f"model {getattr(model, 'name', type(model).__name__)} is not a prompt head")
        return model
    if model is None:
        from recvos.models.loading import default_checkpoint_path

        path = default_checkpoint_path("interactive")
    else:
        path = Path(model)
        if not path.is_file():
            raise RecvosError(f"{path}: prompt-head checkpoint not found; omit model= for the shipped one")
    return _load(str(path), path.stat().st_mtime)


class _Features:
    """A one-frame cache of backbone features, keyed by the frame's bytes and the processing size."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.feats: list[torch.Tensor] | None = None

    def get(self, model: torch.nn.Module, frame: np.ndarray, size: tuple[int, int]) -> list[torch.Tensor]:
        from recvos.inference.inputs import frame_to_tensor

        key = (id(model), size, frame.shape, hashlib.blake2b(frame.tobytes(), digest_size=16).digest())
        if key != self.key or self.feats is None:
            device = next(model.parameters()).device
            self.feats = model.features(frame_to_tensor(frame, size, device))
            self.key = key
        return self.feats


_FEATURES = _Features()


@torch.no_grad()
def learned_mask(
    frame: np.ndarray,
    prompts: Prompts,
    previous: np.ndarray | None = None,
    *,
    model: str | os.PathLike | torch.nn.Module | None = None,
    max_size: int = 240,
    threshold: float = 0.5,
    keep_clicked_only: bool = True,
    clip_to_box: bool = True,
) -> np.ndarray:
    """The prompt head's mask of ``frame`` (uint8 RGB [H, W, 3]) from validated prompts -> bool [H, W].

    model: None (shipped), a checkpoint path or a prompt-head module; max_size: the shorter side it runs at
    (frames are resized to it, up or down).
    keep_clicked_only: drop the parts of the mask that hold no positive click (when there are clicks).
    clip_to_box: nothing outside the box, when a box is given (a box says where the object is). Both
    defaults were chosen on held-out DAVIS-2016 *train* frames (BENCHMARKS.md, Prompts -> mask).
    """
    from recvos.inference.inputs import resize_binary

    head = load_prompt_head(model)
    was_training = head.training
    head.eval()
    try:
        H, W = frame.shape[:2]
        # the head's scale: the shorter side at max_size, small frames upscaled (it was trained at 240p)
        s = max_size / min(H, W)
        h, w = max(1, round(H * s)), max(1, round(W * s))
        p = scale_prompts(prompts, h / H, (h, w))
        prev = previous if previous is None or (h, w) == (H, W) else resize_binary(previous, (h, w))
        maps = torch.from_numpy(prompt_maps(p, prev))[None]
        feats = _FEATURES.get(head, frame, (h, w))
        logits = head(feats, maps.to(feats[0].device))[None]
        if (h, w) != (H, W):
            logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
        mask = (torch.sigmoid(logits[0, 0]) >= threshold).cpu().numpy()
        if clip_to_box and prompts.box is not None:
            x0, y0, x1, y1 = prompts.box
            inside = np.zeros_like(mask)
            inside[y0:y1, x0:x1] = True
            mask &= inside
        return keep_clicked(mask, prompts, largest=False) if keep_clicked_only else mask
    finally:
        head.train(was_training)


METHODS["learned"] = learned_mask
