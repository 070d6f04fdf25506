"""Ground truth and predictions on disk: which sequences and annotated frames there are, and their id maps.

The ground truth is a dataset root (DAVIS-2016/2017, YouTube-VOS, a generic ``JPEGImages`` +
``Annotations`` tree) or a plain annotation folder ``<seq>/<frame>.png``; predictions are
``<pred_dir>/<seq>/<frame>.png``, one per annotated frame, named like the ground truth.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recvos.data.datasets import open_dataset, resolution_folder
from recvos.data.frames import list_images, natural_key
from recvos.data.masks import VOID_ID, read_ids
from recvos.errors import RecvosError
from recvos.evaluation.scoring import normalize_task

log = logging.getLogger(__name__)

__all__ = [
    "SequenceSpec",
    "check_predictions",
    "find_ground_truth",
    "load_ground_truth",
    "prediction_path",
    "read_prediction",
]


@dataclass
class SequenceSpec:
    """Ground truth of one sequence on disk: annotated frame names and their mask paths."""

    name: str
    frames: list[str]
    gt_paths: list[Path]
    binarize: bool = False  # DAVIS-2016: every non-void id is object 1
    convert_masks: bool = False  # opt into converting ambiguous (colour, anti-aliased) masks


def _spec_from_dir(name: str, d: Path, binarize: bool = False) -> SequenceSpec:
    if not d.is_dir():
        raise RecvosError(f"{d}: annotation folder of sequence {name!r} not found")
    pngs = list_images(d, (".png",))
    if not pngs:
        raise RecvosError(f"{d}: no .png masks in the annotation folder of sequence {name!r}")
    return SequenceSpec(name, [p.stem for p in pngs], pngs, binarize)


def _annotation_root(d: Path) -> Path:
    """``d`` or its resolution subfolder (``Annotations/480p``) when ``d`` holds only resolution folders."""
    return resolution_folder(d, only=True) or d


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
        seqs = sorted((p for p in ann.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
        if not seqs:
            raise RecvosError(
                f"{root}: no sequence folders; pass a DAVIS root (with ImageSets) or a folder of <seq>/<frame>.png"
            )
        return [_spec_from_dir(p.name, p) for p in seqs]

    if kind.startswith("davis") and split is None:
        split = "val"
    ds = open_dataset(kind, root, split)
    binarize = bool(getattr(ds, "binarize", False))
    masks_dir = getattr(ds, "masks_dir", None)
    unsup_dir = root / "Annotations_unsupervised"
    if normalize_task(task) == "unsupervised" and kind.startswith("davis") and unsup_dir.is_dir():
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


def load_ground_truth(spec: SequenceSpec) -> list[np.ndarray]:
    """The id maps [H, W] of a sequence's annotated frames, void (255) set to background."""
    out = []
    shape = None
    for p in spec.gt_paths:
        m = read_ids(p, convert=spec.convert_masks)
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


def check_predictions(specs: list[SequenceSpec], pred_dir: Path) -> None:
    """RecvosError unless ``pred_dir`` holds a folder for every sequence of ``specs``."""
    if not pred_dir.is_dir():
        raise RecvosError(
            f"{pred_dir}: prediction folder not found; pass the folder holding <seq>/<frame>.png"
        )
    absent = [s.name for s in specs if not (pred_dir / s.name).is_dir()]
    if absent:
        more = f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""
        raise RecvosError(
            f"{pred_dir / absent[0]}: predictions of sequence {absent[0]!r} not found{more}; "
            "predict every sequence of the split, or restrict the evaluation to the ones you have"
        )


def prediction_path(spec: SequenceSpec, pred_dir: Path, k: int) -> Path:
    """Where the prediction of annotated frame ``k`` of ``spec`` is: ``pred_dir/<seq>/<frame>.png``."""
    return pred_dir / spec.name / f"{spec.frames[k]}.png"


def read_prediction(spec: SequenceSpec, pred_dir: Path, k: int, shape: tuple[int, ...]) -> np.ndarray:
    """The predicted id map of annotated frame ``k`` of ``spec``; RecvosError if missing or not ``shape``."""
    path = prediction_path(spec, pred_dir, k)
    if not path.is_file():
        raise RecvosError(
            f"{path}: prediction missing for frame {spec.frames[k]} of sequence {spec.name!r}; "
            "write one mask per annotated frame, named like the ground truth"
        )
    p = read_ids(path, convert=spec.convert_masks)
    if p.shape != shape:
        raise RecvosError(
            f"{path}: prediction is {p.shape[0]}x{p.shape[1]} but the ground truth {spec.gt_paths[k]} is "
            f"{shape[0]}x{shape[1]}; write predictions at the annotation size"
        )
    return p
