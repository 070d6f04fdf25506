"""The standard simulated clicker and the interactive-segmentation metrics (mIoU@k, NoC@85/90).

:func:`next_click` places the next click as interactive segmentation papers do (Xu et al. 2016, RITM,
SAM): inside the largest error region (false negatives and false positives are separate regions, found as
8-connected components), at the pixel farthest from that region's boundary (an L2 distance transform; the
frame border counts as boundary), positive if the region is missed object, negative otherwise.
:func:`run_clicks` drives any ``predict(points, labels) -> mask`` with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["ClickRun", "iou", "mean_iou_at", "next_click", "noc", "run_clicks"]

#: the usual budget: NoC is reported with at most this many clicks
MAX_CLICKS = 20


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two bool masks [H, W]; 1.0 when both are empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def next_click(gt: np.ndarray, pred: np.ndarray | None = None) -> tuple[int, int, bool] | None:
    """The next simulated click ``(y, x, positive)`` for ``pred`` against ``gt`` (bool [H, W]); None if equal.

    positive: the click is on the object (a false-negative region); otherwise on background.
    """
    gt = np.asarray(gt, bool)
    pred = np.zeros_like(gt) if pred is None else np.asarray(pred, bool)
    best: tuple[int, np.ndarray, bool] | None = None  # (area, component mask, positive)
    for err, positive in ((gt & ~pred, True), (pred & ~gt, False)):
        if not err.any():
            continue
        n, comp, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, comp == k, positive)
    if best is None:
        return None
    _, region, positive = best
    dist = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[
        1:-1, 1:-1
    ]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(y), int(x), positive


@dataclass
class ClickRun:
    """One simulated session: ``ious[k - 1]`` is the IoU after k clicks; ``seconds[k - 1]`` that click's time."""

    ious: list[float]
    seconds: list[float]


def run_clicks(
    predict: Callable[[list[tuple[int, int]], list[int]], np.ndarray],
    gt: np.ndarray,
    *,
    max_clicks: int = MAX_CLICKS,
    min_clicks: int = 5,
    stop_iou: float | None = 0.90,
) -> ClickRun:
    """Click with :func:`next_click` until ``max_clicks``, or ``stop_iou`` is reached after ``min_clicks``.

    ``predict(points, labels)`` gets all clicks so far as (x, y) pixels of ``gt`` and labels (1 object,
    0 background) and returns bool [H, W] at gt's size (it may keep its own previous mask). IoUs after a
    stop are those at the stop (the usual convention: the user stops when satisfied).
    """
    import time

    gt = np.asarray(gt, bool)
    pred = np.zeros_like(gt)
    points: list[tuple[int, int]] = []
    labels: list[int] = []
    ious: list[float] = []
    secs: list[float] = []
    for k in range(1, max_clicks + 1):
        click = next_click(gt, pred)
        if click is None:
            ious.append(1.0)
            secs.append(0.0)
        else:
            y, x, positive = click
            points.append((x, y))
            labels.append(int(positive))
            t0 = time.perf_counter()
            pred = np.asarray(predict(list(points), list(labels)), bool)
            secs.append(time.perf_counter() - t0)
            ious.append(iou(pred, gt))
        if stop_iou is not None and k >= min_clicks and ious[-1] >= stop_iou:
            break
    return ClickRun(ious, secs)


def noc(ious: Sequence[float], threshold: float, max_clicks: int = MAX_CLICKS) -> int:
    """Number of clicks to reach IoU >= threshold (``max_clicks`` if never reached)."""
    for k, v in enumerate(ious[:max_clicks], start=1):
        if v >= threshold:
            return k
    return max_clicks


def mean_iou_at(runs: Sequence[Sequence[float]], k: int) -> float:
    """Mean IoU after ``k`` clicks over runs (a run that stopped earlier counts with its last IoU)."""
    vals = [r[k - 1] if len(r) >= k else r[-1] for r in runs if len(r)]
    return float(np.mean(vals)) if vals else float("nan")
