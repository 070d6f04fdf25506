"""Scoring of one sequence under the DAVIS protocols, from its ground-truth and predicted id maps.

- **Semi-supervised**: every ground-truth object is scored on the annotated frames after the one where it
  first appears (its prompt) and before the last annotated frame. For objects present in the first
  frame this is the toolkit's "drop the first and the last frame".
- **Unsupervised**: all annotated frames. The predicted ids (at most ``max_proposals``, 20 as in the
  toolkit) are matched one-to-one to the ground-truth objects with the Hungarian algorithm maximising
  the sequence-level (J-Mean + F-Mean) / 2; a ground-truth object left without a proposal is scored
  against an empty mask, as the toolkit does (0 on every frame where it is visible).

Objects are the ids present in the ground truth (void, 255, excluded; see
:mod:`recvos.evaluation.protocols` for the differences from the toolkit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from recvos.data.masks import first_appearance, present_ids
from recvos.errors import RecvosError
from recvos.evaluation.metrics import MaskInfo, bound_radius, pair_scores
from recvos.evaluation.results import ObjectScores

log = logging.getLogger(__name__)

__all__ = ["MAX_PROPOSALS", "TASKS", "normalize_task", "score_sequence"]

TASKS = ("semi-supervised", "unsupervised")
#: most predicted ids per sequence in the unsupervised protocol (as the toolkit)
MAX_PROPOSALS = 20


def normalize_task(task: str) -> str:
    """The protocol name in :data:`TASKS` for ``task`` (also "semi", "unsup", underscores); RecvosError if unknown."""
    t = task.lower().replace("_", "-")
    t = {"semi": "semi-supervised", "semisupervised": "semi-supervised", "unsup": "unsupervised"}.get(t, t)
    if t not in TASKS:
        raise RecvosError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return t


def score_sequence(
    task: str,
    name: str,
    frames: Sequence[str],
    gt: Sequence[np.ndarray],
    pred: Callable[[int], np.ndarray],
    bound_th: float,
    pred_label: Callable[[int], str],
    max_proposals: int = MAX_PROPOSALS,
) -> list[ObjectScores]:
    """Scores of each ground-truth object of one sequence under ``task`` (a name of :data:`TASKS`).

    ``frames`` names the annotated frames, ``gt`` holds their id maps int [H, W] (void already 0 or 255),
    ``pred(k)`` reads the predicted id map of annotated frame k and ``pred_label(k)`` names it in errors.
    """
    if task == "semi-supervised":
        return _score_semi(name, frames, gt, pred, bound_th, pred_label)
    return _score_unsup(name, frames, gt, pred, bound_th, pred_label, max_proposals)


def _score_semi(
    name: str,
    frames: Sequence[str],
    gt: Sequence[np.ndarray],
    pred: Callable[[int], np.ndarray],
    bound_th: float,
    pred_label: Callable[[int], str],
) -> list[ObjectScores]:
    n = len(gt)
    first = first_appearance(gt)
    objects = list(first)
    positions = {o: list(range(first[o] + 1, n - 1)) for o in objects}
    for o in objects:
        if not positions[o]:
            log.warning(
                "%s: object %d appears in frame %s, too late to be evaluated (semi-supervised)",
                name,
                o,
                frames[first[o]],
            )
    needed = sorted(set().union(*positions.values())) if objects else []
    js: dict[int, list[float]] = {o: [] for o in objects}
    fs: dict[int, list[float]] = {o: [] for o in objects}
    allowed = set(objects)
    for k in needed:
        g, p = gt[k], pred(k)
        _check_pred_ids(p, allowed, pred_label(k), name)
        radius = bound_radius(g.shape, bound_th)
        for o in objects:
            if first[o] < k:  # k is also before the last frame (k in needed)
                j, f = pair_scores(MaskInfo(_object_mask(g, o)), MaskInfo(_object_mask(p, o)), radius)
                js[o].append(j)
                fs[o].append(f)
    return [
        ObjectScores(
            name,
            o,
            [frames[k] for k in positions[o]],
            np.array(js[o], dtype=np.float64),
            np.array(fs[o], dtype=np.float64),
            pred_id=o,
        )
        for o in objects
        if positions[o]
    ]


def _object_mask(m: np.ndarray, o: int) -> np.ndarray:
    """bool [H, W] mask of object ``o`` in id map ``m`` (a view when ``m`` is already a 0/1 uint8 map)."""
    if o == 1 and m.dtype == np.uint8 and m.flags.c_contiguous and m.size and m.max() <= 1:
        return m.view(bool)
    return m == o


def _check_pred_ids(p: np.ndarray, allowed: set[int], label: str, seq: str) -> None:
    top = int(p.max()) if p.size else 0
    if top == 0 or (top <= len(allowed) and allowed == set(range(1, len(allowed) + 1)) and p.min() >= 0):
        return  # ids 1..K with K objects 1..K: nothing to check further
    extra = [v for v in present_ids(p) if v not in allowed]
    if extra:
        raise RecvosError(
            f"{label}: predicted object id(s) {', '.join(map(str, extra))} are not objects of the ground truth "
            f"of {seq!r} (ids {', '.join(map(str, sorted(allowed))) or 'none'}); semi-supervised predictions must "
            "reuse the ground-truth ids (use --task unsupervised for free ids)"
        )


def _score_unsup(
    name: str,
    frames: Sequence[str],
    gt: Sequence[np.ndarray],
    pred: Callable[[int], np.ndarray],
    bound_th: float,
    pred_label: Callable[[int], str],
    max_proposals: int,
) -> list[ObjectScores]:
    from scipy.optimize import linear_sum_assignment  # ~0.5 s to import; only this protocol needs it

    n = len(gt)
    objects = list(first_appearance(gt))
    if not objects:
        return []
    preds = [pred(k) for k in range(n)]
    proposals: list[int] = sorted(set().union(*(present_ids(p) for p in preds)))
    if len(proposals) > max_proposals:
        raise RecvosError(
            f"{pred_label(0)}: the predictions of {name!r} use {len(proposals)} object ids, more than the "
            f"{max_proposals} proposals allowed in the unsupervised protocol; keep the best {max_proposals}"
        )
    rows = len(proposals) + max(0, len(objects) - len(proposals))  # empty proposals pad, as the toolkit
    J = np.zeros((rows, len(objects), n))
    F = np.zeros((rows, len(objects), n))
    for k in range(n):
        g, p = gt[k], preds[k]
        radius = bound_radius(g.shape, bound_th)
        gts = [MaskInfo(g == o) for o in objects]
        props = [MaskInfo(p == i) for i in proposals]
        empty = MaskInfo(np.zeros(g.shape, dtype=bool))
        props += [empty] * (rows - len(proposals))
        for r, pi in enumerate(props):
            for c, gi in enumerate(gts):
                J[r, c, k], F[r, c, k] = pair_scores(gi, pi, radius)
    score = (J.mean(axis=2) + F.mean(axis=2)) / 2
    row_ind, col_ind = linear_sum_assignment(-score)
    match = {int(c): int(r) for r, c in zip(row_ind, col_ind, strict=True)}
    out = []
    for c, o in enumerate(objects):
        r = match[c]
        out.append(
            ObjectScores(
                name,
                o,
                list(frames),
                J[r, c].copy(),
                F[r, c].copy(),
                pred_id=proposals[r] if r < len(proposals) else None,
            )
        )
    return out
