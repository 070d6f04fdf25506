"""Validation during training: the held-out videos are segmented by the user-facing path itself (a
:class:`~recvos.inference.segmenter.Segmenter` with its default thresholds, prompts at each object's first
annotated frame) and scored with the official protocol, so ``best.pt`` is chosen by what users get."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from recvos.evaluation.protocols import evaluate_arrays
from recvos.inference.dataset import open_sequence
from recvos.inference.segmenter import Segmenter
from recvos.models.base import RecurrentVOS

__all__ = ["validate", "segment_for_validation"]


def segment_for_validation(
    seg: Segmenter, video: Any, max_frames: int, zero_shot: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(ground truth, prediction), int [K, H, W] each, on the annotated frames among the first ``max_frames``."""
    state = open_sequence(seg, video, zero_shot=zero_shot, limit=max_frames)
    preds = {idx: ids for idx, _, ids in seg.propagate(state, zero_shot=zero_shot)}
    annotated = [i for i in video.annotated_indices if i < len(preds)]
    gt = np.stack([np.asarray(video.load_mask(i)) for i in annotated])
    return gt, np.stack([preds[i] for i in annotated])


def validate(
    model: RecurrentVOS, videos: Sequence[Any], *, max_size: int, max_frames: int, device: torch.device
) -> dict[str, float]:
    """Global J&F metrics of ``model`` (its own mode) on the first ``max_frames`` frames of each video."""
    was_training = model.training
    zero_shot = model.mode == "zero-shot"
    seg = Segmenter(model, device, max_size=max_size)  # as users run it (precision "auto" included)
    gts, preds = {}, {}
    try:
        for v in videos:
            gts[v.name], preds[v.name] = segment_for_validation(seg, v, max_frames, zero_shot)
    finally:
        model.train(was_training)
    res = evaluate_arrays(gts, preds, task="unsupervised" if zero_shot else "semi-supervised")
    return {k: float(v) for k, v in res.global_metrics.items()}
