"""``recvos segment``: one video (file, folder or FrameSource) to a folder of masks, planned and checked before
the model loads, resumable after a kill, optionally with an overlay video and probability maps. Streams:
one frame in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recvos.data.frames import FrameSource, SlicedFrames, open_frames
from recvos.data.masks import onehot_to_ids, read_mask, write_mask
from recvos.errors import RecvosError
from recvos.fileio import remove_stale_temps
from recvos.inference.inputs import prompt_masks
from recvos.inference.outputs import (
    Progress,
    RunReport,
    check_output_dir,
    make_folder,
    probe_writable,
    write_failed,
    write_probs,
)
from recvos.inference.overlay import OverlayWriter
from recvos.inference.segmenter import Segmenter

log = logging.getLogger(__name__)


def masks_from_dir(
    folder: Path, names: Sequence[str], indices: Sequence[int] | None = None
) -> dict[int, Path]:
    """Map the PNGs of ``folder`` to positions in the frames ``names``: by frame name, or by an integer file
    stem, the frame number in the whole video (``indices``: the video's frame numbers of ``names``, when a
    range of it is segmented)."""
    if not folder.is_dir():
        raise RecvosError(f"{folder}: mask folder not found; check --masks")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if not files:
        raise RecvosError(f"{folder}: no .png masks in the mask folder")
    by_name = {n: i for i, n in enumerate(names)}
    by_number = {int(k): i for i, k in enumerate(indices)} if indices is not None else None
    out: dict[int, Path] = {}
    for p in files:
        if p.stem in by_name:
            out[by_name[p.stem]] = p
        elif re.fullmatch(r"\d+", p.stem):
            n = int(p.stem)
            if by_number is None:
                if n >= len(names):
                    raise RecvosError(
                        f"{p}: frame index {n} is beyond the video ({len(names)} frames, 0..{len(names) - 1}); "
                        "name masks after their frame"
                    )
                out[n] = p
            elif n in by_number:
                out[by_number[n]] = p
            else:
                raise RecvosError(
                    f"{p}: frame {n} is not among the frames selected by --start/--end/--stride; "
                    "move the mask or change the range"
                )
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
    #: prompt method of :func:`recvos.prompts.mask_from_prompts` (None: its default)
    method: str | None = None


@dataclass
class SegmentPlan:
    """A ``recvos segment`` job with every input and output checked, made before any model is loaded.

    ``source`` holds the frames still to segment (the range, and with ``resume`` the frames from the last
    written mask on); ``prompts`` maps positions in it to ``{obj_id: bool mask}`` (frame size), ``box`` a
    box/clicks prompt at its position. ``skip_first``: frame 0 of ``source`` is the already written mask
    a resumed run re-prompts from. ``total``: masks to write.
    """

    source: FrameSource
    out: Path
    prompts: dict[int, dict[int, np.ndarray]]
    box: BoxOrClicks | None
    overlay: Path | None
    probs: Path | None
    zero_shot: bool
    online_steps: int
    skip_first: bool = False
    resumed_from: str | None = None
    total: int = 0
    created: list[Path] = field(default_factory=list)
    owned: bool = True

    def close(self) -> None:
        if self.owned:
            self.source.close()

    def remove_created(self) -> None:
        """Remove the folders this plan created, if they are still empty (a job that wrote nothing)."""
        for d in reversed(self.created):
            with contextlib.suppress(OSError):
                d.rmdir()


def _written_prefix(out: Path, names: Sequence[str]) -> int:
    """Number of leading frames of ``names`` whose mask is in ``out`` (masks are written in order, atomically,
    so these are complete)."""
    n = 0
    for name in names:
        if not (out / f"{name}.png").is_file():
            break
        n += 1
    return n


def plan_segment(
    source: str | os.PathLike | FrameSource,
    out_dir: str | os.PathLike,
    *,
    mask: str | os.PathLike | None = None,
    masks_dir: str | os.PathLike | None = None,
    prompt: BoxOrClicks | None = None,
    overlay: str | os.PathLike | None = None,
    probs: str | os.PathLike | None = None,
    zero_shot: bool = False,
    online_steps: int = 0,
    overwrite: bool = False,
    resume: bool = False,
    convert_masks: bool = False,
    start: int = 0,
    end: int | None = None,
    stride: int = 1,
) -> SegmentPlan:
    """Check options, frames, masks and output paths of a ``recvos segment`` job (RecvosError naming the
    file and the fix) and create the output folders; nothing is segmented. See :func:`segment_to_folder`."""
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
    if online_steps < 0:
        raise RecvosError(f"--online-steps {online_steps}: must be 0 (no online learning) or more")
    if zero_shot and online_steps:
        raise RecvosError(
            "--online-steps needs masks to learn from; drop it or give --mask instead of --zero-shot"
        )
    if resume and overwrite:
        raise RecvosError(
            "--resume continues the masks in the output folder, --overwrite replaces them; pick one"
        )
    if resume and zero_shot:
        raise RecvosError(
            "--resume re-prompts from the last written mask, which a zero-shot run cannot; rerun with --overwrite"
        )
    if resume and overlay is not None:
        raise RecvosError(
            "--resume cannot append to an overlay video; drop --overlay (or rerun with --overwrite)"
        )
    if overlay is not None:
        overlay = Path(overlay)
        if overlay.suffix.lower() not in (".mp4", ".mov", ".mkv"):
            raise RecvosError(f"{overlay}: overlay videos are written as .mp4, .mov or .mkv; change the name")
        if overlay.resolve().parent == out.resolve():
            raise RecvosError(f"{overlay}: write the overlay outside the mask folder {out}")
        if overlay.is_dir():
            raise RecvosError(f"{overlay}: is a folder; give the overlay a file name such as out.mp4")
    if probs is not None:
        probs = Path(probs)
        if probs.resolve() == out.resolve():
            raise RecvosError(f"{probs}: write the probabilities to another folder than the masks")

    base = open_frames(source)
    owned = not isinstance(source, FrameSource)
    try:
        frames: FrameSource = base
        if start or end is not None or stride != 1:
            frames = SlicedFrames(base, start, end, stride)
        names = list(frames.frame_names)
        indices = frames.indices if isinstance(frames, SlicedFrames) else None
        size = tuple(frames.size)

        def read(path: Path, local: int) -> dict[int, np.ndarray]:
            ids = read_mask(path, convert=convert_masks)
            return prompt_masks(ids, local, size, size, where=str(path))

        prompts: dict[int, dict[int, np.ndarray]] = {}
        if mask is not None:
            prompts[0] = read(Path(mask), 0)
        elif masks_dir is not None:
            for local, p in sorted(masks_from_dir(Path(masks_dir), names, indices).items()):
                prompts[local] = read(p, local)
        box = None
        if prompt is not None:
            number = prompt.frame
            if indices is not None:
                if number not in indices:
                    raise RecvosError(
                        f"--frame {number}: not among the frames selected by --start/--end/--stride"
                    )
                local = indices.index(number)
            else:
                if not 0 <= number < len(names):
                    raise RecvosError(
                        f"--frame {number}: the video has {len(names)} frames (0..{len(names) - 1})"
                    )
                local = number
            box = dataclasses.replace(prompt, frame=local)

        done = 0
        if resume and out.is_dir():
            remove_stale_temps(out)
            if probs is not None and probs.is_dir():
                for d in probs.iterdir():
                    if d.is_dir():
                        remove_stale_temps(d)
            done = _written_prefix(out, names)
        plan = SegmentPlan(
            source=frames,
            out=out,
            prompts=prompts,
            box=box,
            overlay=overlay,
            probs=probs,
            zero_shot=zero_shot,
            online_steps=online_steps,
            total=len(names),
            owned=owned,
        )
        if done:
            # continue from the last written mask: it re-prompts every object still tracked there
            last = done - 1
            plan.source = SlicedFrames(frames, start=last)
            plan.prompts = {t - last: m for t, m in prompts.items() if t > last}
            resumed = read_mask(out / f"{names[last]}.png")
            if resumed.any():
                plan.prompts[0] = prompt_masks(resumed, 0, size, size, where=str(out / f"{names[last]}.png"))
            if box is not None:
                plan.box = dataclasses.replace(box, frame=box.frame - last) if box.frame > last else None
            plan.skip_first = True
            plan.resumed_from = names[last]
            plan.total = len(names) - last - 1
            log.info("resuming after %s: %d of %d masks already written", names[last], done, len(names))
        for folder, what, existing in ((out, "mask", resume), (probs, "probability", resume)):
            if folder is not None and check_output_dir(folder, overwrite, what, allow_existing=existing):
                plan.created.append(folder)
        if overlay is not None:
            if make_folder(overlay.parent, "overlay"):
                plan.created.append(overlay.parent)
            probe_writable(overlay.parent, "overlay video")
        return plan
    except BaseException:
        if owned:
            base.close()
        raise


def _close_writer(writer: OverlayWriter, failed: bool) -> None:
    """Close the overlay; after a failed write (a full disk), a second failure is not reported over the first."""
    if not failed:
        writer.close()
        return
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - the first error is the one to report
        log.debug("overlay %s could not be closed after an error", writer.path, exc_info=True)


def run_segment(seg: Segmenter, plan: SegmentPlan, progress: Progress | None = None) -> RunReport:
    """Segment a checked :class:`SegmentPlan`. Masks are written one by one, atomically: after an error or a
    kill, every mask on disk is complete and ``--resume`` continues after the last one."""
    try:
        seg.model.check_mode(plan.zero_shot, what="--model")
    except RecvosError:
        plan.remove_created()
        raise
    out = plan.out
    if not plan.zero_shot and not plan.prompts and plan.box is None:
        # resumed after every object was lost, and none comes later: the rest is background
        t0 = time.perf_counter()
        empty = np.zeros(plan.source.size, np.int32)
        names = plan.source.frame_names[1:] if plan.skip_first else plan.source.frame_names
        for n, name in enumerate(names):
            try:
                write_mask(out / f"{name}.png", empty)
            except OSError as e:
                raise write_failed(out / f"{name}.png", e, f"the {n} masks before it are complete") from None
            if progress is not None:
                progress.update(1)
        return RunReport(frames=len(names), seconds=time.perf_counter() - t0)
    state = seg.init_state(plan.source)
    try:
        for t, objs in sorted(plan.prompts.items()):
            seg.add_mask(state, t, objs)
        if plan.box is not None:
            b = plan.box
            seg.add_prompt(state, b.frame, 1, box=b.box, points=b.points, labels=b.labels, method=b.method)
        ft = 0.0
        if plan.online_steps > 0:
            describe = getattr(progress, "set_description", None)  # a tqdm bar shows the steps

            def step(done: int, steps: int) -> None:
                if describe is not None:
                    describe(f"online learning {done}/{steps}")

            ft = seg.finetune(state, steps=plan.online_steps, progress=step)
            if describe is not None:
                describe("segment")
        writer = OverlayWriter(plan.overlay, fps=state.fps) if plan.overlay is not None else None
        n = 0
        failed = False
        t0 = time.perf_counter()
        try:
            for idx, obj_ids, result in seg.propagate(
                state, zero_shot=plan.zero_shot, return_probs=plan.probs is not None
            ):
                name = state.frame_name(idx)
                if plan.probs is not None:
                    ids = onehot_to_ids(result, obj_ids, seg.mask_threshold).astype(np.int32)
                else:
                    ids = result
                if plan.skip_first and idx == 0:
                    continue  # the mask this run resumed from
                target = out / f"{name}.png"
                try:
                    if plan.probs is not None:
                        write_probs(plan.probs, name, obj_ids, result)
                    write_mask(target, ids)
                    if writer is not None:
                        writer.write(state.current_frame, ids)
                except OSError as e:
                    failed = True
                    raise write_failed(
                        target,
                        e,
                        f"the {n} masks before it are complete; rerun with --resume to continue",
                    ) from None
                n += 1
                if progress is not None:
                    progress.update(1)
        except BaseException:
            failed = True
            raise
        finally:
            if writer is not None:
                _close_writer(writer, failed)
        return RunReport(frames=n, seconds=time.perf_counter() - t0, finetune_seconds=ft)
    finally:
        state.close()


def segment_to_folder(
    seg: Segmenter,
    source: Any,
    out_dir: str | os.PathLike,
    *,
    progress: Progress | None = None,
    **options: Any,
) -> RunReport:
    """Segment one video (file, folder or FrameSource) into ``out_dir/<frame name>.png`` (DAVIS palette, the
    frames' size). Objects come from a first-frame mask (``mask``), a folder of masks (``masks_dir``), or a
    box/clicks (``prompt``, object id 1); none with ``zero_shot``. Options (see :func:`plan_segment`):
    ``overlay`` (an mp4 with the masks drawn), ``probs`` (a folder of per-object probability PNGs),
    ``online_steps``, ``overwrite``, ``resume`` (continue an interrupted run from its last written mask),
    ``convert_masks`` (colour / anti-aliased masks), ``start``/``end``/``stride`` (a range of frames).
    Everything is checked before the first frame is segmented; masks written before an error stay on disk."""
    plan = plan_segment(source, out_dir, **options)
    try:
        return run_segment(seg, plan, progress)
    finally:
        plan.close()
