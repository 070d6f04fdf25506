"""DAVIS evaluation protocols (semi-supervised, unsupervised) over folders of masks or in-memory arrays.

Same numbers as the official DAVIS toolkit (davis2017-evaluation), faster, and more careful:

- **Semi-supervised**: every ground-truth object is scored on the annotated frames after the one where it
  first appears (its prompt) and before the last annotated frame. For objects present in the first
  frame this is the toolkit's "drop the first and the last frame".
- **Unsupervised**: all annotated frames. The predicted ids (at most ``max_proposals``, 20 as in the
  toolkit) are matched one-to-one to the ground-truth objects with the Hungarian algorithm maximising
  the sequence-level (J-Mean + F-Mean) / 2; a ground-truth object left without a proposal is scored
  against an empty mask, as the toolkit does (0 on every frame where it is visible).
- Global metrics average the per-object statistics over all objects of all sequences;
  J&F-Mean = (J-Mean + F-Mean) / 2.

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

import logging
import math
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from recvos.errors import RecvosError
from recvos.evaluation.metrics import BOUND_TH, MaskInfo, bound_radius, pair_scores, summarize

log = logging.getLogger(__name__)

__all__ = [
    "METRIC_KEYS",
    "TASKS",
    "EvalResult",
    "ObjectScores",
    "SequenceSpec",
    "evaluate_arrays",
    "evaluate_semi_supervised",
    "evaluate_sequences",
    "evaluate_unsupervised",
    "find_ground_truth",
]

TASKS = ("semi-supervised", "unsupervised")
METRIC_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
VOID_ID = 255
MAX_PROPOSALS = 20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RES_RE = re.compile(r"^(\d+p|full-resolution)$", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------- results


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
        jm, jr, jd = summarize(self.j)
        fm, fr, fd = summarize(self.f)
        return {
            "J&F-Mean": (jm + fm) / 2, "J-Mean": jm, "J-Recall": jr, "J-Decay": jd,
            "F-Mean": fm, "F-Recall": fr, "F-Decay": fd,
        }


@dataclass
class EvalResult:
    """Scores of one evaluation: ``global_metrics`` (keys :data:`METRIC_KEYS`) and the objects behind them."""

    task: str
    objects: list[ObjectScores]
    global_metrics: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.global_metrics:
            self.global_metrics = _global_metrics(self.objects)

    @property
    def sequences(self) -> list[str]:
        """Sequence names in evaluation order."""
        return list(dict.fromkeys(o.sequence for o in self.objects))

    @property
    def per_sequence(self) -> list[dict]:
        """One row per object (the toolkit's per-sequence table): Sequence (``seq_objid``), sequence,
        object, frames (count) and the seven metrics."""
        rows = []
        for o in self.objects:
            rows.append({
                "Sequence": o.name, "sequence": o.sequence, "object": o.object_id, "frames": len(o.frames),
                **o.stats(),
            })
        return rows


def _global_metrics(objects: Sequence[ObjectScores]) -> dict[str, float]:
    if not objects:
        return {k: math.nan for k in METRIC_KEYS}
    st = np.array([[*summarize(o.j), *summarize(o.f)] for o in objects], dtype=np.float64)  # [N, 6]
    jm, jr, jd, fm, fr, fd = (float(np.mean(st[:, i])) for i in range(6))
    return {
        "J&F-Mean": (jm + fm) / 2.0, "J-Mean": jm, "J-Recall": jr, "J-Decay": jd,
        "F-Mean": fm, "F-Recall": fr, "F-Decay": fd,
    }


# ------------------------------------------------------------------------------------------ core scoring


def _check_task(task: str) -> str:
    t = task.lower().replace("_", "-")
    t = {"semi": "semi-supervised", "semisupervised": "semi-supervised", "unsup": "unsupervised"}.get(t, t)
    if t not in TASKS:
        raise RecvosError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return t


def _present_ids(a: np.ndarray) -> list[int]:
    """Sorted non-zero values of an id map (fast for the usual few small ids)."""
    if a.size == 0:
        return []
    top = int(a.max())
    if top <= 0:
        return [int(v) for v in np.unique(a) if v != 0] if a.min() < 0 else []
    if top <= 16 and a.min() >= 0:
        return [v for v in range(1, top + 1) if v == top or np.any(a == v)]
    if a.dtype == np.uint8:
        vals = np.flatnonzero(np.bincount(a.ravel(), minlength=256))
    else:
        vals = np.unique(a)
    return [int(v) for v in vals if v != 0]


def _gt_objects(gt: Sequence[np.ndarray]) -> tuple[list[int], dict[int, int]]:
    """Object ids over the ground-truth frames (void excluded) and the position where each appears first."""
    first: dict[int, int] = {}
    for k, m in enumerate(gt):
        for v in _present_ids(m):
            if v != VOID_ID and v not in first:
                first[v] = k
    ids = sorted(first)
    return ids, {i: first[i] for i in ids}


def _semi_positions(n: int, first: int) -> list[int]:
    """Evaluated positions of an object first seen at ``first`` among ``n`` annotated frames."""
    return list(range(first + 1, n - 1))


def _score_semi(
    name: str,
    frames: Sequence[str],
    gt: Sequence[np.ndarray],
    pred: Callable[[int], np.ndarray],
    bound_th: float,
    pred_label: Callable[[int], str],
) -> list[ObjectScores]:
    """Semi-supervised scores of one sequence; ``pred(k)`` gives the prediction of annotated frame k."""
    n = len(gt)
    objects, first = _gt_objects(gt)
    positions = {o: _semi_positions(n, first[o]) for o in objects}
    for o in objects:
        if not positions[o]:
            log.warning("%s: object %d appears in frame %s, too late to be evaluated (semi-supervised)",
                        name, o, frames[first[o]])
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
    out = []
    for o in objects:
        if positions[o]:
            out.append(ObjectScores(
                name, o, [frames[k] for k in positions[o]], np.array(js[o], dtype=np.float64),
                np.array(fs[o], dtype=np.float64), pred_id=o,
            ))
    return out


def _object_mask(m: np.ndarray, o: int) -> np.ndarray:
    """bool [H, W] mask of object ``o`` in id map ``m`` (a view when ``m`` is already a 0/1 uint8 map)."""
    if o == 1 and m.dtype == np.uint8 and m.flags.c_contiguous and m.size and m.max() <= 1:
        return m.view(bool)
    return m == o


def _check_pred_ids(p: np.ndarray, allowed: set[int], label: str, seq: str) -> None:
    top = int(p.max()) if p.size else 0
    if top == 0 or (top <= len(allowed) and allowed == set(range(1, len(allowed) + 1)) and p.min() >= 0):
        return  # ids 1..K with K objects 1..K: nothing to check further
    extra = [v for v in _present_ids(p) if v not in allowed]
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
    """Unsupervised scores of one sequence: all annotated frames, Hungarian matching of proposals."""
    from scipy.optimize import linear_sum_assignment

    n = len(gt)
    objects, _ = _gt_objects(gt)
    if not objects:
        return []
    preds = [pred(k) for k in range(n)]
    proposals: list[int] = sorted(set().union(*(_present_ids(p) for p in preds)))
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
        out.append(ObjectScores(
            name, o, list(frames), J[r, c].copy(), F[r, c].copy(),
            pred_id=proposals[r] if r < len(proposals) else None,
        ))
    return out


def _score(task, name, frames, gt, pred, bound_th, pred_label, max_proposals) -> list[ObjectScores]:
    if task == "semi-supervised":
        return _score_semi(name, frames, gt, pred, bound_th, pred_label)
    return _score_unsup(name, frames, gt, pred, bound_th, pred_label, max_proposals)


# ------------------------------------------------------------------------------------------ mask reading


def _read_ids(path: Path, convert: bool = False) -> np.ndarray:
    """Object-id map of a mask PNG, uint8 [H, W] where ids fit (same result as ``read_mask``).

    Fast paths, which skip conversions: palette PNGs (indices = ids, decoded by PIL) and 8-bit greyscale
    PNGs holding only 0/255 (DAVIS-2016) or only 0 (decoded by OpenCV, ~40% faster than PIL).
    Everything else, and every error, goes through :func:`recvos.data.masks.read_mask` (``convert``
    is its opt-in conversion of ambiguous masks).
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
    except OSError:
        head = b""
    if len(head) == 26 and head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR" and head[24] == 8:
        color_type = head[25]
        if color_type == 0:  # 8-bit greyscale
            a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if a is not None and a.ndim == 2 and a.dtype == np.uint8:
                nz = np.count_nonzero(a)
                if nz == 0:
                    return a
                on = a == 255
                if np.count_nonzero(on) == nz:
                    return on.view(np.uint8)
        elif color_type == 3:  # palette
            from PIL import Image

            try:
                with Image.open(path) as img:
                    if img.mode == "P":
                        return np.asarray(img)
            except (OSError, ValueError, SyntaxError):
                pass  # read_mask reports it
    from recvos.data.masks import read_mask

    m = read_mask(path, convert=convert)
    if m.size and 0 <= m.min() and m.max() < 256:
        return m.astype(np.uint8)
    return m


@dataclass
class SequenceSpec:
    """Ground truth of one sequence on disk: annotated frame names and their mask paths."""

    name: str
    frames: list[str]
    gt_paths: list[Path]
    binarize: bool = False  # DAVIS-2016: every non-void id is object 1
    convert_masks: bool = False  # opt into converting ambiguous (colour, anti-aliased) masks


@dataclass
class _Job:
    spec: SequenceSpec
    pred_dir: Path
    task: str
    bound_th: float
    max_proposals: int


def _load_gt(spec: SequenceSpec) -> list[np.ndarray]:
    out = []
    shape = None
    for p in spec.gt_paths:
        m = _read_ids(p, spec.convert_masks)
        if spec.binarize:
            if m.size and (m.max() > 1 or m.min() < 0):
                m = ((m != 0) & (m != VOID_ID)).view(np.uint8)
        elif m.size and m.max() >= VOID_ID:
            m = np.where(m == VOID_ID, 0, m).astype(m.dtype)
        if shape is not None and m.shape != shape:
            log.debug("%s: mask size %s differs from the sequence's first mask %s", p, m.shape, shape)
        shape = m.shape
        out.append(m)
    return out


def _run_job(job: _Job) -> list[ObjectScores]:
    """Worker: read one sequence's ground truth and predictions and score it."""
    spec = job.spec
    gt = _load_gt(spec)
    seq_dir = job.pred_dir / spec.name

    def label(k: int) -> Path:
        return seq_dir / f"{spec.frames[k]}.png"

    def pred(k: int) -> np.ndarray:
        path = label(k)
        if not path.is_file():
            raise RecvosError(
                f"{path}: prediction missing for frame {spec.frames[k]} of sequence {spec.name!r}; "
                "write one mask per annotated frame, named like the ground truth"
            )
        p = _read_ids(path, spec.convert_masks)
        if p.shape != gt[k].shape:
            raise RecvosError(
                f"{path}: prediction is {p.shape[0]}x{p.shape[1]} but the ground truth {spec.gt_paths[k]} is "
                f"{gt[k].shape[0]}x{gt[k].shape[1]}; write predictions at the annotation size"
            )
        return p

    return _score(job.task, spec.name, spec.frames, gt, pred, job.bound_th, lambda k: str(label(k)), job.max_proposals)


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where it is safe (fast start), else forkserver/spawn."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and "torch" not in sys.modules:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def default_workers() -> int:
    """Worker processes used by default: the CPUs available to this process, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _run_jobs(
    jobs: list[_Job], workers: int, on_done: Callable[[str], None] | None
) -> list[list[ObjectScores]]:
    results: list[list[ObjectScores] | None] = [None] * len(jobs)
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        for i, job in enumerate(jobs):
            results[i] = _run_job(job)
            if on_done:
                on_done(job.spec.name)
        return results  # type: ignore[return-value]
    # longest sequences first for a balanced load
    order = sorted(range(len(jobs)), key=lambda i: -len(jobs[i].spec.frames))
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_worker_init) as ex:
        futures = {i: ex.submit(_run_job, jobs[i]) for i in order}
        try:
            for i in order:
                results[i] = futures[i].result()
                if on_done:
                    on_done(jobs[i].spec.name)
        except BaseException:
            for fut in futures.values():
                fut.cancel()
            raise
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------- ground-truth index


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _list_pngs(d: Path) -> list[Path]:
    return sorted((p for p in d.iterdir() if p.suffix.lower() == ".png" and p.is_file()), key=lambda p: _natural_key(p.name))


def _spec_from_dir(name: str, d: Path, binarize: bool = False) -> SequenceSpec:
    if not d.is_dir():
        raise RecvosError(f"{d}: annotation folder of sequence {name!r} not found")
    pngs = _list_pngs(d)
    if not pngs:
        raise RecvosError(f"{d}: no .png masks in the annotation folder of sequence {name!r}")
    return SequenceSpec(name, [p.stem for p in pngs], pngs, binarize)


def _annotation_root(d: Path) -> Path:
    """``d`` or its single resolution subfolder (``Annotations/480p``) when ``d`` holds no masks itself."""
    subdirs = [p for p in d.iterdir() if p.is_dir()]
    res = [p for p in subdirs if _RES_RE.match(p.name)]
    if res and len(res) == len(subdirs):
        if any(p.name == "480p" for p in res):
            return d / "480p"
        return sorted(res, key=lambda p: _natural_key(p.name))[0]
    return d


def find_ground_truth(
    gt: str | os.PathLike, split: str | None = None, dataset: str | None = None, task: str = "semi-supervised"
) -> list[SequenceSpec]:
    """The annotated sequences under ``gt``.

    ``gt`` is a dataset root (``ImageSets/2017`` -> DAVIS-2017, ``ImageSets/2016`` -> DAVIS-2016, with
    ``split``, default "val"; a ``JPEGImages`` + ``Annotations`` tree without ImageSets is a generic
    folder dataset), or a plain annotation folder ``<seq>/<frame>.png``. ``dataset`` forces a kind
    ("davis2016", "davis2017", "youtube-vos", "folder"). For the unsupervised task, a DAVIS root's
    ``Annotations_unsupervised`` folder is used when present (as the toolkit does).
    """
    root = Path(gt)
    if not root.is_dir():
        raise RecvosError(f"{root}: ground-truth folder not found; pass a DAVIS root or an annotation folder")
    kind = dataset
    if kind is None:
        sets = root / "ImageSets"
        if (sets / "2017").is_dir():
            kind = "davis2017"
        elif (sets / "2016").is_dir() or (sets / "480p").is_dir():
            kind = "davis2016"
        elif (root / "JPEGImages").is_dir() and (root / "Annotations").is_dir():
            kind = "folder"
    if kind is None:  # plain annotation folder
        if split is not None:
            log.warning("%s is an annotation folder without ImageSets; --split %s is ignored", root, split)
        ann = _annotation_root(root)
        seqs = sorted((p for p in ann.iterdir() if p.is_dir()), key=lambda p: _natural_key(p.name))
        if not seqs:
            raise RecvosError(
                f"{root}: no sequence folders; pass a DAVIS root (with ImageSets) or a folder of <seq>/<frame>.png"
            )
        return [_spec_from_dir(p.name, p) for p in seqs]

    from recvos.data.datasets import open_dataset

    if kind.startswith("davis") and split is None:
        split = "val"
    ds = open_dataset(kind, root, split)
    binarize = bool(getattr(ds, "binarize", False))
    masks_dir = getattr(ds, "masks_dir", None)
    unsup_dir = root / "Annotations_unsupervised"
    if _check_task(task) == "unsupervised" and kind.startswith("davis") and unsup_dir.is_dir():
        masks_dir = _annotation_root(unsup_dir)
        log.info("unsupervised task: ground truth from %s", masks_dir)
    specs = []
    for name in ds.names:
        if masks_dir is not None:
            # list the annotation folder directly (as the toolkit does), which avoids scanning every mask
            specs.append(_spec_from_dir(name, Path(masks_dir) / name, binarize))
        else:
            seq = ds[name]
            paths = [p for p in seq.mask_paths if p is not None]
            if not paths:
                raise RecvosError(f"sequence {name!r} of {root} has no annotated frame")
            specs.append(SequenceSpec(name, [p.stem for p in paths], paths, binarize))
    if not specs:
        raise RecvosError(f"{root}: no sequences to evaluate")
    return specs


# ------------------------------------------------------------------------------------------- public API


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

    ``gt`` is a dataset root or an annotation folder (see :func:`find_ground_truth`), or specs from it.
    ``sequences`` restricts the evaluation to those names; ``workers`` processes score sequences in
    parallel (default :func:`default_workers`). ``convert_masks`` opts into converting ambiguous masks
    (see :func:`recvos.data.masks.read_mask`). ``on_sequence_done(name)`` is called as each finishes.
    Raises RecvosError for a missing prediction sequence or frame, a size mismatch, a bad mask, or
    nothing to evaluate.
    """
    task = _check_task(task)
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
    if not pred_root.is_dir():
        raise RecvosError(f"{pred_root}: prediction folder not found; pass the folder holding <seq>/<frame>.png")
    absent = [s.name for s in specs if not (pred_root / s.name).is_dir()]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise RecvosError(
            f"{pred_root / absent[0]}: predictions of sequence {absent[0]!r} not found{more}; "
            "predict every sequence of the split, or restrict the evaluation to the ones you have"
        )
    jobs = [_Job(s, pred_root, task, bound_th, max_proposals) for s in specs]
    per_seq = _run_jobs(jobs, default_workers() if workers is None else workers, on_sequence_done)
    objects = [o for seq in per_seq for o in seq]
    if not objects:
        raise RecvosError(f"{label}: no ground-truth object could be evaluated (empty masks or too-short sequences)")
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
            raise RecvosError(f"{what}: mask has non-integer values; threshold or argmax probabilities into ids first")
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
    task = _check_task(task)
    objects: list[ObjectScores] = []
    for name, g in gt_masks.items():
        if name not in pred_masks:
            raise RecvosError(f"no predictions for sequence {name!r}")
        gl = [_integer_ids(m, f"ground truth of {name!r}") for m in g]
        gl = [np.where(m == VOID_ID, 0, m) if m.size and m.max() >= VOID_ID else m for m in gl]
        pl = pred_masks[name]
        if len(pl) != len(gl):
            raise RecvosError(f"sequence {name!r}: {len(pl)} predicted frames for {len(gl)} ground-truth frames")
        frames = [f"{k:05d}" for k in range(len(gl))]

        def pred(k: int, pl=pl, gl=gl, name=name) -> np.ndarray:
            p = _integer_ids(pl[k], f"prediction of {name!r} frame {k}")
            if p.shape != gl[k].shape:
                raise RecvosError(
                    f"sequence {name!r} frame {k}: prediction shape {p.shape} differs from the ground truth "
                    f"{gl[k].shape}"
                )
            return p

        objects += _score(task, name, frames, gl, pred, bound_th, lambda k, name=name: f"{name} frame {k}",
                          max_proposals)
    if not objects:
        raise RecvosError("no ground-truth object could be evaluated (empty masks or too-short sequences)")
    return EvalResult(task, objects)
