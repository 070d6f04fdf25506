"""DAVIS evaluation (semi-supervised, unsupervised) over folders of masks or in-memory arrays.

Same numbers as the official DAVIS toolkit (davis2017-evaluation), faster, and more careful. The protocols
themselves are in :mod:`recvos.evaluation.scoring`, the results in :mod:`recvos.evaluation.results`, the
reading of ground truth and prediction folders in :mod:`recvos.evaluation.folders`.

Differences from the toolkit, on purpose:

- objects are the ids actually present in the ground truth (the toolkit takes 1..max(first-frame id),
  so a missing id becomes a phantom object and objects absent from frame 0 are never scored);
- objects that appear after the first frame are scored from the frame after their first appearance;
- the decay of objects scored on more than 255 frames is right (the toolkit's bin edges are uint8);
- ground-truth id 255 is void (as in the toolkit) and never an object; a ground-truth object is reported
  under its own id (the toolkit numbers unsupervised rows by proposal order);
- nothing is cached: results are recomputed on every call (the toolkit silently reuses old CSVs);
- a missing sequence or frame, a size mismatch, or a predicted id that is not a ground-truth object
  (semi-supervised) raises :class:`~recvos.errors.RecvosError` naming the file.

Speed: PNGs are decoded once (OpenCV for 8-bit greyscale, PIL for palettes), J and F work inside the
masks' bounding boxes (see :mod:`recvos.evaluation.metrics`), and sequences run in parallel processes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from recvos.data.masks import VOID_ID
from recvos.errors import RecvosError
from recvos.evaluation.folders import (
    SequenceSpec,
    check_predictions,
    find_ground_truth,
    load_ground_truth,
    prediction_path,
    read_prediction,
)
from recvos.evaluation.metrics import BOUND_TH
from recvos.evaluation.parallel import default_workers, parallel_map
from recvos.evaluation.results import EvalResult, ObjectScores
from recvos.evaluation.scoring import MAX_PROPOSALS, normalize_task, score_sequence

__all__ = ["evaluate_arrays", "evaluate_semi_supervised", "evaluate_sequences", "evaluate_unsupervised"]


@dataclass
class _Job:
    """One sequence to score in a worker process."""

    spec: SequenceSpec
    pred_dir: Path
    task: str
    bound_th: float
    max_proposals: int


def _score_job(job: _Job) -> list[ObjectScores]:
    """Worker: read one sequence's ground truth and predictions and score it."""
    spec = job.spec
    gt = load_ground_truth(spec)
    return score_sequence(
        job.task,
        spec.name,
        spec.frames,
        gt,
        lambda k: read_prediction(spec, job.pred_dir, k, gt[k].shape),
        job.bound_th,
        lambda k: str(prediction_path(spec, job.pred_dir, k)),
        job.max_proposals,
    )


def evaluate_sequences(
    gt: str | os.PathLike | Sequence[SequenceSpec],
    pred_dir: str | os.PathLike,
    task: str = "semi-supervised",
    split: str | None = None,
    *,
    dataset: str | None = None,
    sequences: Iterable[str] | None = None,
    workers: int | None = None,
    bound_th: float = BOUND_TH,
    max_proposals: int = MAX_PROPOSALS,
    convert_masks: bool = False,
    on_sequence_done: Callable[[str], None] | None = None,
) -> EvalResult:
    """Score the predicted masks in ``pred_dir/<seq>/<frame>.png`` against the ground truth ``gt``.

    ``gt`` is a dataset root or an annotation folder (see :func:`~recvos.evaluation.folders.find_ground_truth`),
    or specs from it. ``sequences`` restricts the evaluation to those names; ``workers`` processes score
    sequences in parallel (default :func:`~recvos.evaluation.parallel.default_workers`). ``convert_masks``
    opts into converting ambiguous masks (see :func:`recvos.data.masks.read_mask`).
    ``on_sequence_done(name)`` is called as each finishes. Raises RecvosError for a missing prediction
    sequence or frame, a size mismatch, a bad mask, or nothing to evaluate.
    """
    task = normalize_task(task)
    if isinstance(gt, (list, tuple)):
        specs, label = list(gt), "the ground truth"
    else:
        specs, label = find_ground_truth(gt, split, dataset, task), str(gt)
    if convert_masks:
        specs = [replace(s, convert_masks=True) for s in specs]
    if sequences is not None:
        wanted = list(sequences)
        known = {s.name: s for s in specs}
        missing = [w for w in wanted if w not in known]
        if missing:
            raise RecvosError(f"sequence(s) {', '.join(missing)} not in {label}; known: {', '.join(known)}")
        specs = [known[w] for w in wanted]
    pred_root = Path(pred_dir)
    check_predictions(specs, pred_root)
    jobs = [_Job(s, pred_root, task, bound_th, max_proposals) for s in specs]
    per_seq = parallel_map(
        _score_job,
        jobs,
        default_workers() if workers is None else workers,
        cost=lambda job: len(job.spec.frames),
        on_done=(lambda job: on_sequence_done(job.spec.name)) if on_sequence_done else None,
    )
    objects = [o for seq in per_seq for o in seq]
    if not objects:
        raise RecvosError(
            f"{label}: no ground-truth object could be evaluated (empty masks or too-short sequences)"
        )
    return EvalResult(task, objects)


def evaluate_semi_supervised(gt, pred_dir, split: str | None = None, **kwargs) -> EvalResult:
    """:func:`evaluate_sequences` with the semi-supervised protocol."""
    return evaluate_sequences(gt, pred_dir, "semi-supervised", split, **kwargs)


def evaluate_unsupervised(gt, pred_dir, split: str | None = None, **kwargs) -> EvalResult:
    """:func:`evaluate_sequences` with the unsupervised protocol."""
    return evaluate_sequences(gt, pred_dir, "unsupervised", split, **kwargs)


def _integer_ids(m, what: str) -> np.ndarray:
    """An id map as an integer/bool array; float maps must hold whole numbers (not probabilities)."""
    a = np.asarray(m)
    if a.dtype.kind == "f":
        if not np.array_equal(a, np.round(a)):
            raise RecvosError(
                f"{what}: mask has non-integer values; threshold or argmax probabilities into ids first"
            )
        return a.astype(np.int64)
    if a.dtype.kind not in "biu":
        raise RecvosError(f"{what}: mask dtype {a.dtype} is not an integer id map")
    return a


def evaluate_arrays(
    gt_masks: Mapping[str, np.ndarray | Sequence[np.ndarray]],
    pred_masks: Mapping[str, np.ndarray | Sequence[np.ndarray]],
    task: str = "semi-supervised",
    *,
    bound_th: float = BOUND_TH,
    max_proposals: int = MAX_PROPOSALS,
) -> EvalResult:
    """Score in-memory id maps: ``gt_masks[seq]`` and ``pred_masks[seq]`` int [T, H, W], every frame annotated.

    Frames are named ``00000``, ``00001``, ... Same protocol and numbers as :func:`evaluate_sequences`
    (single process; meant for validation during training).
    """
    task = normalize_task(task)
    objects: list[ObjectScores] = []
    for name, g in gt_masks.items():
        if name not in pred_masks:
            raise RecvosError(f"no predictions for sequence {name!r}")
        gl = [_integer_ids(m, f"ground truth of {name!r}") for m in g]
        gl = [np.where(m == VOID_ID, 0, m) if m.size and m.max() >= VOID_ID else m for m in gl]
        pl = pred_masks[name]
        if len(pl) != len(gl):
            raise RecvosError(
                f"sequence {name!r}: {len(pl)} predicted frames for {len(gl)} ground-truth frames"
            )
        frames = [f"{k:05d}" for k in range(len(gl))]

        def pred(k: int, pl=pl, gl=gl, name=name) -> np.ndarray:
            p = _integer_ids(pl[k], f"prediction of {name!r} frame {k}")
            if p.shape != gl[k].shape:
                raise RecvosError(
                    f"sequence {name!r} frame {k}: prediction shape {p.shape} differs from the ground truth "
                    f"{gl[k].shape}"
                )
            return p

        objects += score_sequence(
            task, name, frames, gl, pred, bound_th, lambda k, name=name: f"{name} frame {k}", max_proposals
        )
    if not objects:
        raise RecvosError("no ground-truth object could be evaluated (empty masks or too-short sequences)")
    return EvalResult(task, objects)
