"""Evaluation results: per-object J and F over frames, and the global metrics averaged over objects.

J&F-Mean = (J-Mean + F-Mean) / 2; every global metric is the mean of the per-object statistics over all
objects of all sequences (see :func:`recvos.evaluation.metrics.summarize` for mean, recall and decay).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recvos.evaluation.metrics import summarize

__all__ = ["METRIC_KEYS", "EvalResult", "ObjectScores"]

METRIC_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")


def _metrics(jm: float, jr: float, jd: float, fm: float, fr: float, fd: float) -> dict[str, float]:
    """The seven metrics (:data:`METRIC_KEYS`) from J and F mean, recall and decay."""
    return {
        "J&F-Mean": (jm + fm) / 2,
        "J-Mean": jm,
        "J-Recall": jr,
        "J-Decay": jd,
        "F-Mean": fm,
        "F-Recall": fr,
        "F-Decay": fd,
    }


@dataclass
class ObjectScores:
    """Per-frame J and F of one ground-truth object of one sequence.

    ``frames`` names the evaluated frames (file stems); ``j`` and ``f`` are float64 [T'] over them.
    ``pred_id`` is the predicted id scored against it (unsupervised: the matched proposal, None if
    none was left; semi-supervised: the object's own id).
    """

    sequence: str
    object_id: int
    frames: list[str]
    j: np.ndarray
    f: np.ndarray
    pred_id: int | None = None

    @property
    def name(self) -> str:
        """``<sequence>_<object id>`` as in the toolkit's per-sequence table."""
        return f"{self.sequence}_{self.object_id}"

    def stats(self) -> dict[str, float]:
        """J/F mean, recall and decay of this object, and their J&F-Mean."""
        return _metrics(*summarize(self.j), *summarize(self.f))


def average_metrics(objects: Sequence[ObjectScores]) -> dict[str, float]:
    """The seven metrics averaged over objects (nan when there is none)."""
    if not objects:
        return {k: math.nan for k in METRIC_KEYS}
    st = np.array([[*summarize(o.j), *summarize(o.f)] for o in objects], dtype=np.float64)  # [N, 6]
    return _metrics(*(float(np.mean(st[:, i])) for i in range(6)))


@dataclass
class EvalResult:
    """Scores of one evaluation: ``global_metrics`` (keys :data:`METRIC_KEYS`) and the objects behind them."""

    task: str
    objects: list[ObjectScores]
    global_metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.global_metrics:
            self.global_metrics = average_metrics(self.objects)

    @property
    def sequences(self) -> list[str]:
        """Sequence names in evaluation order."""
        return list(dict.fromkeys(o.sequence for o in self.objects))

    @property
    def per_sequence(self) -> list[dict]:
        """One row per object (the toolkit's per-sequence table): Sequence (``seq_objid``), sequence,
        object, frames (count) and the seven metrics."""
        return [
            {
                "Sequence": o.name,
                "sequence": o.sequence,
                "object": o.object_id,
                "frames": len(o.frames),
                **o.stats(),
            }
            for o in self.objects
        ]
