"""Online learning (S2S "OL"): fine-tune a model on one video's annotated frame(s) before segmenting it.

Training pairs come from an annotated frame alone: one random affine warp (zoom, crop, flip, rotation,
shear, translation) and colour jitter drawn for the pair, plus a small second warp per frame, so the first
image plays the previous frame (its warped mask is the previous mask) and the second the current frame.
The steps run in mixed precision when asked (``dtype=torch.bfloat16``: autocast, fp32 weights and optimizer; the
Segmenter asks for it when it propagates in bf16, which a CPU with native bf16 runs about 1.5x faster).
Defaults are cautious: the backbone stays frozen, the model stays in eval mode (BatchNorm statistics are not
updated, no dropout), few steps, and the result is validated on held-out warps — fine-tuned weights are kept
only if their IoU there is not worse than the original weights'. Restoring the original weights after the
video is the caller's job (:class:`~recvos.inference.segmenter.Segmenter` does it).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recvos.data.transforms import ClipTransform
from recvos.errors import RecvosError
from recvos.losses import bce_loss, soft_iou_loss
from recvos.models.backbones import Backbone
from recvos.models.base import RecurrentVOS
from recvos.models.feed import ClipFeed

log = logging.getLogger(__name__)

#: the recommended number of online-learning steps (at :func:`finetune`'s default learning rate, 4e-4): the
#: fastest setting with the best J&F on the 5 held-out training videos (0.667 -> 0.757, every video gains;
#: BENCHMARKS.md, "Online learning in bf16, at a higher learning rate")
ONLINE_STEPS = 50


@dataclass
class FinetuneResult:
    """What online learning did: seconds, steps, IoU on held-out warps before/after, kept or not."""

    seconds: float
    steps: int
    iou_before: float
    iou_after: float
    kept: bool


def pair_transform(size: tuple[int, int]) -> ClipTransform:
    """The augmentation for online pairs at the processing ``size`` (h, w): moderate shared warp + motion."""
    return ClipTransform(
        size,
        scale=(0.95, 1.2),
        hflip=0.5,
        rotate=10.0,
        shear=5.0,
        translate=0.05,
        brightness=0.2,
        contrast=0.2,
        saturation=0.2,
        hue=0.02,
        jitter_translate=0.04,
        jitter_rotate=4.0,
        jitter_scale=0.04,
    )


def make_pair(
    frame: np.ndarray, ids: np.ndarray, transform: ClipTransform, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One (previous, current) pair from a frame: uint8 [H, W, 3] and ids int [Hm, Wm] over 1..K ->
    frames float [1, 2, 3, h, w] in [0, 1] and masks float [1, 2, K, h, w]."""
    k = int(ids.max())
    f, m = transform(np.stack([frame, frame]), np.stack([ids, ids]), rng)
    frames = torch.from_numpy(f).permute(0, 3, 1, 2).float().div(255)[None]
    masks = torch.from_numpy(m)[:, None] == torch.arange(1, k + 1)[None, :, None, None]
    return frames, masks.float()[None]


def trainable_parameters(model: RecurrentVOS, train_backbone: bool = False) -> list[torch.nn.Parameter]:
    """All parameters except those of :class:`Backbone` submodules (unless ``train_backbone``)."""
    frozen: set[int] = set()
    if not train_backbone:
        for mod in model.modules():
            if isinstance(mod, Backbone):
                frozen.update(id(p) for p in mod.parameters())
    return [p for p in model.parameters() if id(p) not in frozen]


def pair_logits(model: RecurrentVOS, frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """A (previous, current) pair through the model's loop with teacher forcing -> logits [1, 2, K, h, w]."""
    return model.unroll_clip(frames, ClipFeed(masks, teacher=True)).logits


def pair_loss(model: RecurrentVOS, frames: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    logits = pair_logits(model, frames, masks)
    return (bce_loss(logits, masks) + soft_iou_loss(torch.sigmoid(logits), masks)).mean()


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device`` (nothing for fp32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def pair_iou(
    model: RecurrentVOS,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    dtype: torch.dtype = torch.float32,
) -> float:
    """Mean IoU of the current-frame prediction (probability > 0.5) over objects and pairs, the forward pass
    autocast to ``dtype``."""
    scores = []
    for frames, masks in pairs:
        with autocast(frames.device, dtype):
            logits = pair_logits(model, frames, masks)
        pred = logits[:, 1] > 0
        gt = masks[:, 1] > 0.5
        inter = (pred & gt).flatten(2).sum(-1).float()
        union = (pred | gt).flatten(2).sum(-1).float()
        scores.append(torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).flatten())
    return float(torch.cat(scores).mean()) if scores else 0.0


def finetune(
    model: RecurrentVOS,
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    size: tuple[int, int],
    steps: int = ONLINE_STEPS,
    *,
    lr: float = 4e-4,
    seed: int = 0,
    train_backbone: bool = False,
    val_pairs: int = 4,
    tolerance: float = 0.0,
    dtype: torch.dtype = torch.float32,
    blend: float = 1.0,
    progress: Callable[[int, int], bool | None] | None = None,
):
    """Fine-tune ``model`` in place on pairs warped from ``samples`` [(frame uint8 [H, W, 3], ids int [Hm, Wm]
    over 1..K)] at the processing ``size`` (h, w) with Adam; returns a FinetuneResult. ``dtype`` bf16 (or
    fp16 on CUDA) runs the forward passes under autocast; the weights and the optimizer stay fp32. ``blend``
    in (0, 1] keeps ``original + blend * (fine-tuned - original)`` (a weight-space mix of the two models; 1: the
    fine-tuned weights). ``progress(done, steps)`` is called after every step; if it returns True the
    fine-tuning stops there and the original weights are put back (the result's ``steps`` says how many ran).

    The fine-tuned weights are kept only if the IoU on ``val_pairs`` held-out warps is at least the original
    IoU minus ``tolerance``; otherwise the original weights are put back.
    """
    if steps < 0:
        raise RecvosError(f"online learning steps must be >= 0, got {steps}")
    if not 0 < blend <= 1:
        raise RecvosError(f"online learning blend must be in (0, 1], got {blend}")
    samples = [(f, i) for f, i in samples if i.max() > 0]
    if not samples:
        raise RecvosError("online learning needs at least one annotated frame with an object")
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    transform = pair_transform(size)
    rng = np.random.default_rng(seed)
    val_rng = np.random.default_rng(seed + 10_000)

    def draw(g: np.random.Generator, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        frame, ids = samples[k % len(samples)]
        f, m = make_pair(frame, ids, transform, g)
        return f.to(device), m.to(device)

    held_out = [draw(val_rng, k) for k in range(max(1, val_pairs))]
    params = trainable_parameters(model, train_backbone)
    if not params or steps == 0:
        iou = pair_iou(model, held_out, dtype)
        return FinetuneResult(time.perf_counter() - t0, 0, iou, iou, False)
    was_training = model.training
    flags = {id(p): p.requires_grad for p in model.parameters()}
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.eval()  # frozen BatchNorm statistics, no dropout
    try:
        iou_before = pair_iou(model, held_out, dtype)
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr)
        done = 0
        with torch.enable_grad():
            for step in range(steps):
                frames, masks = draw(rng, step)
                with autocast(device, dtype):
                    loss = pair_loss(model, frames, masks)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done = step + 1
                if progress is not None and progress(done, steps):
                    break
        if done < steps:  # stopped by ``progress``
            model.load_state_dict(backup)
            log.info("online learning stopped after %d of %d steps: original weights kept", done, steps)
            return FinetuneResult(time.perf_counter() - t0, done, iou_before, iou_before, False)
        if blend < 1:
            with torch.no_grad():
                for name, v in model.state_dict().items():
                    if v.is_floating_point():
                        v.copy_(backup[name].lerp(v, blend))
        iou_after = pair_iou(model, held_out, dtype)
        kept = iou_after >= iou_before - tolerance
        if not kept:
            model.load_state_dict(backup)
            log.info(
                "online learning made held-out IoU worse (%.3f -> %.3f): reverted", iou_before, iou_after
            )
    except BaseException:
        model.load_state_dict(backup)
        raise
    finally:
        for p in model.parameters():
            p.requires_grad_(flags[id(p)])
        model.train(was_training)
    return FinetuneResult(time.perf_counter() - t0, steps, iou_before, iou_after, kept)
