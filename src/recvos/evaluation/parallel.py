"""Worker processes for evaluation: a process pool that maps a function over jobs, longest first."""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

import cv2

__all__ = ["default_workers", "parallel_map"]

J = TypeVar("J")
R = TypeVar("R")


def default_workers() -> int:
    """Worker processes used by default: the CPUs available to this process, at most 8."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


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


def parallel_map(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    *,
    cost: Callable[[J], float] | None = None,
    on_done: Callable[[J], None] | None = None,
) -> list[R]:
    """``[fn(job) for job in jobs]`` in up to ``workers`` processes (in this one when 1).

    ``fn`` must be picklable (a module-level function). Jobs of highest ``cost`` are submitted first for a
    balanced load; ``on_done(job)`` is called in this process as each result comes back. The first error
    cancels the jobs not started yet and is raised.
    """
    results: list[R | None] = [None] * len(jobs)
    workers = max(1, min(workers, len(jobs)))
    if workers == 1:
        for i, job in enumerate(jobs):
            results[i] = fn(job)
            if on_done:
                on_done(job)
        return results  # type: ignore[return-value]
    order = sorted(range(len(jobs)), key=lambda i: -cost(jobs[i])) if cost else list(range(len(jobs)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_worker_init) as ex:
        futures = {i: ex.submit(fn, jobs[i]) for i in order}
        try:
            for i in order:
                results[i] = futures[i].result()
                if on_done:
                    on_done(jobs[i])
        except BaseException:
            for fut in futures.values():
                fut.cancel()
            raise
    return results  # type: ignore[return-value]
