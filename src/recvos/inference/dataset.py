"""``recvos predict``: every sequence of a dataset to a results folder or a YouTube-VOS submission zip, each
object prompted at its first annotated frame (the semi-supervised protocol), resumable; and
:func:`open_sequence`, the one way a dataset sequence is segmented (validation and benchmarks use it too).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recvos.data.masks import write_mask
from recvos.errors import RecvosError
from recvos.fileio import remove_stale_temps
from recvos.inference.outputs import (
    Progress,
    RunReport,
    make_folder,
    probe_writable,
    write_failed,
    zip_folder,
)
from recvos.inference.segmenter import InferenceState, Segmenter

log = logging.getLogger(__name__)

FORMATS = ("davis", "youtube-vos-zip")


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
    seg: Segmenter,
    seq: Any,
    *,
    zero_shot: bool = False,
    online_steps: int = 0,
    limit: int | None = None,
    finetune_options: dict[str, Any] | None = None,
) -> InferenceState:
    """A dataset sequence (its first ``limit`` frames) made ready to propagate as a user would: objects
    prompted at their first annotated frame (none for ``zero_shot``), online learning run if asked (with
    ``finetune_options`` for :meth:`Segmenter.finetune`), masks returned at the annotation size."""
    state = seg.init_state(SequenceFrames(seq, limit), output_size=tuple(seq.mask_size))
    if not zero_shot:
        prompt_sequence(seg, state, seq, limit)
        if online_steps > 0:
            seg.finetune(state, steps=online_steps, **(finetune_options or {}))
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


def expected_stems(dataset: Any, seq: Any, fmt: str) -> list[str]:
    """Frame stems a finished sequence has masks for, in order (the evaluated frames for a submission zip)."""
    stems = [Path(p).stem for p in seq.frame_paths]
    wanted = evaluated_frames(dataset, seq) if fmt == "youtube-vos-zip" else None
    return stems if wanted is None else [s for s in stems if s in wanted]


def results_base(out_dir: str | os.PathLike, fmt: str) -> Path:
    """The folder holding ``<seq>/<frame>.png``: ``out_dir`` itself, or ``out_dir/Annotations`` for a zip."""
    return Path(out_dir) / "Annotations" if fmt == "youtube-vos-zip" else Path(out_dir)


def sequence_complete(dataset: Any, seq: Any, base: Path, fmt: str) -> bool:
    """True if ``base/<seq>`` holds every mask a finished sequence has (what ``--resume`` skips)."""
    seq_dir = base / seq.name
    return seq_dir.is_dir() and all(
        (seq_dir / f"{s}.png").is_file() for s in expected_stems(dataset, seq, fmt)
    )


def missing_sequences(dataset: Any, out_dir: str | os.PathLike, names: Sequence[str], fmt: str) -> list[str]:
    """The sequences among ``names`` without complete results in ``out_dir`` (in the order given)."""
    base = results_base(out_dir, fmt)
    return [n for n in names if not sequence_complete(dataset, dataset[n], base, fmt)]


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
    resume: bool = False,
    zip_results: bool = True,
    progress: Progress | None = None,
) -> RunReport:
    """Segment the sequences ``names`` (default: all) of a VOSDataset into ``out_dir/<seq>/<frame>.png`` at the
    annotation size. ``fmt="youtube-vos-zip"`` writes ``out_dir/Annotations/<seq>/<frame>.png`` for the
    annotated frames (see :func:`evaluated_frames`) and zips the ``Annotations`` folder into
    ``out_dir/submission.zip`` (the YouTube-VOS submission layout) with every sequence present there; after
    sharded runs, ``recvos predict ... --zip-only`` zips all shards' results. ``resume``: sequences that
    already have every mask are skipped, the others (an interrupted run's last one) are redone.
    ``zip_results=False`` leaves the zip to the caller (rank 0 of a distributed run, once every rank is done).
    """
    check_predict_output(out_dir, dataset, names, fmt, overwrite, resume)
    out = Path(out_dir)
    names = list(dataset.names) if names is None else list(names)
    base = results_base(out, fmt)
    frames = 0
    ft = 0.0
    skipped = 0
    t0 = time.perf_counter()
    for name in names:
        seq = dataset[name]
        seq_dir = base / seq.name
        if resume and seq_dir.is_dir():
            if sequence_complete(dataset, seq, base, fmt):
                skipped += 1
                if progress is not None:
                    progress.update(1)
                continue
            remove_stale_temps(seq_dir)
        make_folder(seq_dir, "results")
        wanted = set(expected_stems(dataset, seq, fmt))
        state = open_sequence(seg, seq, zero_shot=zero_shot, online_steps=online_steps)
        ft += state.finetune_result.seconds if state.finetune_result is not None else 0.0
        for idx, _, ids in seg.propagate(state, zero_shot=zero_shot):
            stem = Path(seq.frame_paths[idx]).stem
            if stem in wanted:
                target = seq_dir / f"{stem}.png"
                try:
                    write_mask(target, ids)
                except OSError as e:
                    raise write_failed(
                        target, e, "finished sequences are complete; rerun with --resume to continue"
                    ) from None
            frames += 1
        if progress is not None:
            progress.update(1)
    if skipped:
        log.info("skipped %d finished sequence(s)", skipped)
    seconds = time.perf_counter() - t0 - ft
    if fmt == "youtube-vos-zip" and zip_results:
        zip_folder(base, out / "submission.zip")
    return RunReport(frames=frames, seconds=seconds, finetune_seconds=ft, sequences=len(names) - skipped)


def check_predict_output(
    out_dir: str | os.PathLike,
    dataset: Any,
    names: Sequence[str] | None,
    fmt: str,
    overwrite: bool,
    resume: bool,
) -> None:
    """Check a ``recvos predict`` results folder before any model is loaded: the format, results of these
    sequences already there (refused unless ``overwrite`` or ``resume``), and that it can be written."""
    if fmt not in FORMATS:
        raise RecvosError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
    if overwrite and resume:
        raise RecvosError("--resume keeps finished sequences, --overwrite replaces them; pick one")
    out = Path(out_dir)
    names = list(dataset.names) if names is None else list(names)
    base = results_base(out, fmt)
    if out.exists() and not out.is_dir():
        raise RecvosError(f"{out}: exists and is not a folder; choose another output path")
    if not (overwrite or resume):
        busy = [n for n in names if (base / n).is_dir() and any((base / n).iterdir())]
        if busy:
            raise RecvosError(
                f"{base / busy[0]}: results exist for {len(busy)} sequence(s); pass --resume to keep the "
                "finished ones, --overwrite to replace them, or choose another folder"
            )
    make_folder(base, "results")
    probe_writable(base, "results")
