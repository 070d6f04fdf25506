"""Whole jobs built on the segmenter: one video to a folder of masks (``recvos segment``) and a dataset to a
results folder or a YouTube-VOS submission zip (``recvos predict``). Both stream: one frame in memory.
"""

from __future__ import annotations

import logging
import os
import re
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from recvos.data.masks import write_mask
from recvos.errors import RecvosError
from recvos.fileio import atomic_write
from recvos.inference.overlay import OverlayWriter
from recvos.inference.segmenter import InferenceState, Segmenter

log = logging.getLogger(__name__)

FORMATS = ("davis", "youtube-vos-zip")


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...


@dataclass
class RunReport:
    """Frames written, seconds spent propagating (decode, model, write) and online learning."""

    frames: int
    seconds: float
    finetune_seconds: float = 0.0
    sequences: int = 1

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse an existing non-empty folder unless ``overwrite``; create it otherwise."""
    if path.exists() and not path.is_dir():
        raise RecvosError(f"{path}: exists and is not a folder; choose another output path")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RecvosError(
            f"{path}: output folder exists and is not empty; pass --overwrite or choose another folder"
        )
    path.mkdir(parents=True, exist_ok=True)


def masks_from_dir(state: InferenceState, folder: Path) -> dict[int, Path]:
    """Map the PNGs of ``folder`` to frame indices: by frame name (folder input) or by integer file stem."""
    if not folder.is_dir():
        raise RecvosError(f"{folder}: mask folder not found; check --masks")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise RecvosError(f"{folder}: no .png masks in the mask folder")
    names = {state.frame_name(i): i for i in range(state.num_frames)} if state.num_frames is not None else {}
    out: dict[int, Path] = {}
    for p in files:
        if p.stem in names:
            out[names[p.stem]] = p
        elif re.fullmatch(r"\d+", p.stem):
            out[int(p.stem)] = p
        else:
            raise RecvosError(
                f"{p}: mask name matches no frame; name masks after their frame (e.g. 00000.png)"
            )
    return out


@dataclass
class BoxOrClicks:
    """One object given on frame ``frame`` as a box (x0, y0, x1, y1) and/or clicks [(x, y)] with labels
    (1 object, 0 background), in the frame's pixels (``recvos segment --box/--points``)."""

    frame: int = 0
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] | None = None
    labels: list[int] | None = None


def segment_to_folder(
    seg: Segmenter,
    source: Any,
    out_dir: str | os.PathLike,
    *,
    mask: str | os.PathLike | None = None,
    masks_dir: str | os.PathLike | None = None,
    prompt: BoxOrClicks | None = None,
    overlay: str | os.PathLike | None = None,
    zero_shot: bool = False,
    online_steps: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Segment one video (file, folder or FrameSource) into ``out_dir/<frame name>.png`` (DAVIS palette, the
    frames' size), optionally with an overlay mp4. Objects come from a first-frame mask, a folder of masks,
    or a box/clicks (object id 1); none with ``zero_shot``. Masks written before an error stay on disk."""
    out = Path(out_dir)
    given = [
        g for g, v in (("--mask", mask), ("--masks", masks_dir), ("--box/--points", prompt)) if v is not None
    ]
    if not zero_shot and not given:
        raise RecvosError(
            "give the objects with --mask FIRST.png, --masks DIR or --box X0,Y0,X1,Y1, or use --zero-shot"
        )
    if zero_shot and given:
        raise RecvosError(f"--zero-shot takes no objects; drop {given[0]} or --zero-shot")
    if len(given) > 1:
        raise RecvosError(f"give the objects one way: {' or '.join(given)}, not both")
    if overlay is not None and Path(overlay).resolve().parent == out.resolve():
        raise RecvosError(f"{overlay}: write the overlay outside the mask folder {out}")
    state = seg.init_state(source)
    try:
        if mask is not None:
            seg.add_mask(state, 0, mask)
        elif masks_dir is not None:
            for idx, p in sorted(masks_from_dir(state, Path(masks_dir)).items()):
                seg.add_mask(state, idx, p)
        elif prompt is not None:
            seg.add_prompt(state, prompt.frame, 1, box=prompt.box, points=prompt.points, labels=prompt.labels)
        check_output_dir(out, overwrite)
        ft = seg.finetune(state, steps=online_steps) if online_steps > 0 else 0.0
        writer = OverlayWriter(overlay, fps=state.fps) if overlay is not None else None
        n = 0
        t0 = time.perf_counter()
        try:
            for idx, _, ids in seg.propagate(state, zero_shot=zero_shot):
                write_mask(out / f"{state.frame_name(idx)}.png", ids)
                if writer is not None:
                    writer.write(state.current_frame, ids)
                n += 1
                if progress is not None:
                    progress.update(1)
        finally:
            if writer is not None:
                writer.close()
        return RunReport(frames=n, seconds=time.perf_counter() - t0, finetune_seconds=ft)
    finally:
        state.close()


# ---------------------------------------------------------------------------------------------- datasets
def parse_shard(spec: str | None) -> tuple[int, int]:
    """ "i/n" (0 <= i < n) -> (i, n); None -> (0, 1)."""
    if spec is None:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise RecvosError(f"--shard {spec!r}: expected i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def shard_names(names: Sequence[str], index: int, count: int) -> list[str]:
    """The ``index``-th of ``count`` interleaved shards of the sorted names (they partition the names)."""
    return sorted(names)[index::count]


class SequenceFrames:
    """A re-iterable, sized view of the first ``limit`` frames of a dataset sequence, loaded one at a time."""

    def __init__(self, seq: Any, limit: int | None = None) -> None:
        self.seq = seq
        self.n = len(seq.frame_paths) if limit is None else min(limit, len(seq.frame_paths))

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.n):
            yield self.seq.load_frame(i)


def prompt_sequence(seg: Segmenter, state: InferenceState, seq: Any, limit: int | None = None) -> None:
    """Add each object of a dataset sequence at its first annotated frame (the semi-supervised protocol;
    later ground truth is unused). Objects first annotated at or after ``limit`` are left out."""
    by_frame: dict[int, list[int]] = {}
    for obj, t in seq.first_frame.items():
        if limit is None or t < limit:
            by_frame.setdefault(int(t), []).append(int(obj))
    for t, objs in sorted(by_frame.items()):
        ids = seq.load_mask(t)
        if ids is None:
            raise RecvosError(f"{seq.name}: frame {t} is listed as annotated but has no mask file")
        masks = {o: ids == o for o in objs if (ids == o).any()}
        if len(masks) < len(objs):
            log.warning(
                "%s: objects %s are empty on their first frame %d; skipped",
                seq.name,
                sorted(set(objs) - set(masks)),
                t,
            )
        if masks:
            seg.add_mask(state, t, masks)


def open_sequence(
    seg: Segmenter, seq: Any, *, zero_shot: bool = False, online_steps: int = 0, limit: int | None = None
) -> InferenceState:
    """A dataset sequence (its first ``limit`` frames) made ready to propagate as a user would: objects
    prompted at their first annotated frame (none for ``zero_shot``), online learning run if asked, masks
    returned at the annotation size."""
    state = seg.init_state(SequenceFrames(seq, limit), output_size=tuple(seq.mask_size))
    if not zero_shot:
        prompt_sequence(seg, state, seq, limit)
        if online_steps > 0:
            seg.finetune(state, steps=online_steps)
    return state


def evaluated_frames(dataset: Any, seq: Any) -> set[str] | None:
    """Frame stems a YouTube-VOS submission holds for ``seq``: those its meta.json lists for any object (the
    annotated frames, every 5th; ``valid_all_frames`` has more), or None (all frames) without meta.json."""
    meta = getattr(dataset, "meta", None)
    info = meta.get(seq.name) if isinstance(meta, dict) else None
    if not info or "objects" not in info:
        return None
    stems = {f for obj in info["objects"].values() for f in obj.get("frames", [])}
    return stems or None


def predict_dataset(
    seg: Segmenter,
    dataset: Any,
    out_dir: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    fmt: str = "davis",
    zero_shot: bool = False,
    online_steps: int = 0,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> RunReport:
    """Segment the sequences ``names`` (default: all) of a VOSDataset into ``out_dir/<seq>/<frame>.png`` at the
    annotation size. ``fmt="youtube-vos-zip"`` writes ``out_dir/Annotations/<seq>/<frame>.png`` for the
    annotated frames (see :func:`evaluated_frames`) and zips the ``Annotations`` folder into
    ``out_dir/submission.zip`` (the YouTube-VOS submission layout) with every sequence present there; after
    sharded runs, ``recvos predict ... --zip-only`` zips all shards' results.
    """
    if fmt not in FORMATS:
        raise RecvosError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    names = list(dataset.names) if names is None else list(names)
    base = out / "Annotations" if fmt == "youtube-vos-zip" else out
    if out.exists() and not out.is_dir():
        raise RecvosError(f"{out}: exists and is not a folder; choose another output path")
    if not overwrite:
        busy = [n for n in names if (base / n).is_dir() and any((base / n).iterdir())]
        if busy:
            raise RecvosError(
                f"{base / busy[0]}: results exist for {len(busy)} sequence(s); pass --overwrite or choose another folder"
            )
    frames = 0
    ft = 0.0
    t0 = time.perf_counter()
    for name in names:
        seq = dataset[name]
        seq_dir = base / seq.name
        seq_dir.mkdir(parents=True, exist_ok=True)
        wanted = evaluated_frames(dataset, seq) if fmt == "youtube-vos-zip" else None
        state = open_sequence(seg, seq, zero_shot=zero_shot, online_steps=online_steps)
        ft += state.finetune_result.seconds if state.finetune_result is not None else 0.0
        for idx, _, ids in seg.propagate(state, zero_shot=zero_shot):
            stem = Path(seq.frame_paths[idx]).stem
            if wanted is None or stem in wanted:
                write_mask(seq_dir / f"{stem}.png", ids)
            frames += 1
        if progress is not None:
            progress.update(1)
    seconds = time.perf_counter() - t0 - ft
    if fmt == "youtube-vos-zip":
        zip_folder(base, out / "submission.zip")
    return RunReport(frames=frames, seconds=seconds, finetune_seconds=ft, sequences=len(names))


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip ``folder`` (its name as the top-level entry, e.g. ``Annotations/<seq>/<frame>.png``) atomically."""
    with atomic_write(zip_path) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, Path(folder.name) / p.relative_to(folder))
    log.info("wrote %s", zip_path)
    return zip_path
