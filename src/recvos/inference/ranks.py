"""``torchrun ... -m recvos predict``: a dataset's sequences split across the ranks of one or more machines.

Every rank computes the same split (balanced by frame count) and segments its share with
:func:`~recvos.inference.dataset.predict_dataset`, recording its progress in a small status file beside the
results (``RESULTS/.recvos-ranks/``, which must therefore be a folder that every machine shares). A rank whose
sequence fails records the error and stops; the others go on. Rank 0, after its own share, waits for every
status to say finished (giving up on a rank that has not finished a sequence for ``timeout`` seconds, so that
a dead machine cannot hang it), then checks the results on disk: it zips a YouTube-VOS submission and returns
the merged report when every sequence is complete, or raises a RecvosError naming what is missing (a rerun
with ``resume=True`` completes only that).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recvos.distributed import DistInfo, all_gather_objects, barrier
from recvos.errors import RecvosError
from recvos.fileio import atomic_write
from recvos.inference.dataset import missing_sequences, predict_dataset, results_base
from recvos.inference.outputs import Progress, RunReport, merge_reports, zip_folder
from recvos.inference.segmenter import Segmenter

log = logging.getLogger(__name__)

#: the folder (inside RESULTS) of the run id and the ranks' status files; removed by rank 0 at the end
STATUS_DIR = ".recvos-ranks"
#: how many missing sequences the final error names before "and N more"
NAMED = 10


def split_by_frames(counts: Mapping[str, int], world: int) -> list[list[str]]:
    """The sequences (name -> frame count) dealt to ``world`` ranks, longest first to the least loaded rank
    (ties: the lower rank), so that the ranks' frame totals are close; each share sorted by name. The same
    counts give the same split on every rank, whatever their order."""
    loads = [0] * world
    shares: list[list[str]] = [[] for _ in range(world)]
    for name in sorted(counts, key=lambda n: (-counts[n], n)):
        r = min(range(world), key=lambda i: (loads[i], i))
        shares[r].append(name)
        loads[r] += counts[name]
    return [sorted(s) for s in shares]


@dataclass
class RankStatus:
    """What one rank reports: its share, how many of it are done, and at the end its report or its error."""

    rank: int
    run: str
    names: list[str]
    done: int = 0
    finished: bool = False
    error: str | None = None
    report: dict[str, Any] | None = None


def status_path(folder: Path, rank: int) -> Path:
    return folder / f"rank-{rank:05d}.json"


def write_status(folder: Path, status: RankStatus) -> None:
    with atomic_write(status_path(folder, status.rank), "w", encoding="utf-8") as f:
        json.dump(asdict(status), f)


def read_status(folder: Path, rank: int, run: str) -> RankStatus | None:
    """Rank ``rank``'s status for this ``run``, or None (not written yet, or left by an earlier run)."""
    try:
        status = RankStatus(**json.loads(status_path(folder, rank).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return status if status.run == run else None


class StatusProgress:
    """The Progress given to ``predict_dataset``: rewrites this rank's status after each sequence, and on
    rank 0 moves the progress bar by every rank's finished sequences."""

    def __init__(self, folder: Path, status: RankStatus, world: int, bar: Progress | None) -> None:
        self.folder, self.status, self.world, self.bar = folder, status, world, bar
        self.shown = 0

    def update(self, n: int = 1) -> None:
        self.status.done += n
        write_status(self.folder, self.status)
        if self.bar is not None:
            others = (read_status(self.folder, r, self.status.run) for r in range(1, self.world))
            self.show(self.status.done + sum(s.done for s in others if s is not None))

    def show(self, done: int) -> None:
        if self.bar is not None and done > self.shown:
            self.bar.update(done - self.shown)
            self.shown = done


def wait_for_ranks(
    folder: Path,
    run: str,
    world: int,
    timeout: float,
    poll: float = 0.5,
    on_progress: Callable[[int], None] | None = None,
) -> list[RankStatus | None]:
    """Every rank's last status once all say finished or the unfinished ones have not changed for ``timeout``
    seconds (counted on this machine's clock). ``on_progress`` gets the total of finished sequences."""
    last: list[RankStatus | None] = [None] * world
    changed = [time.monotonic()] * world
    while True:
        now = time.monotonic()
        for r in range(world):
            s = read_status(folder, r, run)
            if s != last[r]:
                last[r], changed[r] = s, now
        if on_progress is not None:
            on_progress(sum(s.done for s in last if s is not None))
        waiting = [r for r in range(world) if not (last[r] is not None and last[r].finished)]
        if not waiting or all(now - changed[r] >= timeout for r in waiting):
            return last
        time.sleep(poll)


def describe_ranks(statuses: Sequence[RankStatus | None], timeout: float) -> list[str]:
    """One phrase per rank that failed or went silent."""
    out = []
    for r, s in enumerate(statuses):
        if s is None:
            out.append(f"rank {r} never reported (no word for {timeout:g} s)")
        elif s.error is not None:
            out.append(f"rank {r} failed on {s.error}")
        elif not s.finished:
            out.append(
                f"rank {r} went silent after {s.done} of {len(s.names)} sequences (no word for {timeout:g} s)"
            )
    return out


def current(share: Sequence[str], done: int) -> str:
    """The sequence a rank was on after ``done`` of its ``share`` (its results folder if it had not begun)."""
    return share[done] if done < len(share) else "its results folder"


def error_line(e: Exception) -> str:
    """An exception on one line: a RecvosError's message, anything else's type and first line."""
    first = (str(e).strip().splitlines() or [""])[0]
    return first if isinstance(e, RecvosError) else f"{type(e).__name__}: {first}"


def incomplete_message(base: Path, missing: Sequence[str], total: int, notes: Sequence[str]) -> str:
    named = ", ".join(missing[:NAMED]) + (f" and {len(missing) - NAMED} more" if len(missing) > NAMED else "")
    why = "".join(f"; {n}" for n in notes)
    return (
        f"{base}: {len(missing)} of {total} sequence(s) have no complete results: {named}{why}; "
        "rerun the same command with --resume to complete only those"
    )


def agree_on_run(out: Path, counts: dict[str, int], info: DistInfo) -> str:
    """Rank 0 starts a run (a fresh status folder with a run id); every rank checks that it sees rank 0's
    folder and the same sequences to do, else all raise the same RecvosError. Returns the run id."""
    folder = out / STATUS_DIR
    if info.is_main:
        shutil.rmtree(folder, ignore_errors=True)
        with atomic_write(folder / "run", "w", encoding="utf-8") as f:
            f.write(uuid.uuid4().hex)
    barrier(info)
    try:
        seen: str | None = (folder / "run").read_text(encoding="utf-8")
    except OSError:
        seen = None
    views = all_gather_objects((seen, counts), info)
    blind = [r for r, (s, _) in enumerate(views) if s != views[0][0]]
    if blind:
        raise RecvosError(
            f"{out}: rank(s) {', '.join(map(str, blind))} cannot see the files rank 0 writes there; with several "
            "machines the results folder must be one shared folder (same -o path on a file system they all mount)"
        )
    differ = [r for r, (_, c) in enumerate(views) if c != views[0][1]]
    if differ:
        raise RecvosError(
            f"rank(s) {', '.join(map(str, differ))} see other sequences (or other finished results) than rank 0; "
            "give every rank the same options and the same dataset"
        )
    return str(views[0][0])


def predict_on_ranks(
    seg: Segmenter,
    dataset: Any,
    out_dir: str | os.PathLike,
    info: DistInfo,
    *,
    names: Sequence[str],
    fmt: str = "davis",
    zero_shot: bool = False,
    online_steps: int = 0,
    overwrite: bool = False,
    resume: bool = False,
    timeout: float = 1800.0,
    progress: Progress | None = None,
) -> RunReport:
    """This rank's share of ``names`` (see the module docstring); on rank 0, the merged report of every rank
    once all sequences are complete (RecvosError naming the missing ones otherwise). ``progress`` (rank 0)
    counts the sequences of every rank, finished ones skipped by ``resume`` included."""
    out = Path(out_dir)
    todo = missing_sequences(dataset, out, names, fmt) if resume else list(names)
    counts = {n: len(dataset[n].frame_paths) for n in todo}
    run = agree_on_run(out, counts, info)
    folder = out / STATUS_DIR
    share = split_by_frames(counts, info.world_size)[info.rank]
    status = RankStatus(rank=info.rank, run=run, names=share)
    tracker = StatusProgress(folder, status, info.world_size, progress if info.is_main else None)
    write_status(folder, status)
    if info.is_main and len(todo) < len(names):
        log.info("skipped %d finished sequence(s)", len(names) - len(todo))
        if progress is not None:
            progress.update(len(names) - len(todo))
    report = RunReport(frames=0, seconds=0.0, sequences=0)
    try:
        report = predict_dataset(
            seg,
            dataset,
            out,
            names=share,
            fmt=fmt,
            zero_shot=zero_shot,
            online_steps=online_steps,
            overwrite=overwrite,
            resume=resume,
            zip_results=False,
            progress=tracker,
        )
        status.report = asdict(report)
    except Exception as e:  # this rank stops; the others go on and rank 0 reports it
        status.error = f"{current(share, status.done)}: {error_line(e)}"
        if isinstance(e, RecvosError):
            log.error("rank %d stopped at %s; the other ranks go on", info.rank, status.error)
        else:  # a bug or a crash underneath: its traceback is worth a look
            log.exception("rank %d stopped at %s; the other ranks go on", info.rank, status.error)
    status.finished = True
    write_status(folder, status)
    if not info.is_main:
        return report
    log.info("rank 0 done; waiting for the other ranks")
    statuses = wait_for_ranks(folder, run, info.world_size, timeout, on_progress=tracker.show)
    shutil.rmtree(folder, ignore_errors=True)
    base = results_base(out, fmt)
    missing = missing_sequences(dataset, out, todo, fmt)
    if missing:
        raise RecvosError(incomplete_message(base, missing, len(names), describe_ranks(statuses, timeout)))
    if fmt == "youtube-vos-zip":
        zip_folder(base, out / "submission.zip")
    return merge_reports([RunReport(**s.report) for s in statuses if s is not None and s.report is not None])
