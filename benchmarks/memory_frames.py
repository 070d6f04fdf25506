"""Speed of the shipped one-shot default's loop by memory size (frames each object remembers), in one run.

The model is optimised as the Segmenter does (``optimize_for_inference``, in the precision ``auto`` picks on
this CPU) once per memory size; each copy runs its loop (``unroll``: init_state + one step per frame) over
``--frames`` random 240x427 frames with 1 and 3 objects given on frame 0. The sizes alternate within each
round; the best of the rounds after the first (warm-up) is reported, in ms/frame.

Usage::

    .venv/bin/python benchmarks/memory_frames.py --write
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch starts OpenMP

import torch  # noqa: E402
from _common import report  # noqa: E402  (benchmarks/ is on sys.path)

from recvos.inference.segmenter import inference_dtype  # noqa: E402
from recvos.models.feed import FirstFrameFeed  # noqa: E402
from recvos.models.loading import resolve_model  # noqa: E402

SIZE = (240, 427)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory", type=int, nargs="+", default=[3, 6])
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = inference_dtype("auto", torch.device("cpu"))
    base = resolve_model(None)
    models = {}
    for k in args.memory:
        m = copy.deepcopy(base)
        m.memory = k
        models[k] = m.optimize_for_inference().to(dtype)
    g = torch.Generator().manual_seed(0)
    frames = [torch.rand(1, 3, *SIZE, generator=g).to(dtype) for _ in range(args.frames)]
    first = torch.zeros(1, 3, *SIZE)
    first[0, 0, 50:150, 100:300] = 1
    first[0, 1, 20:100, 20:150] = 1
    first[0, 2, 120:220, 250:400] = 1
    best: dict[tuple[int, int], float] = {}
    with torch.inference_mode():
        for r in range(args.rounds):
            for k, model in models.items():
                for n in (1, 3):
                    t0 = time.perf_counter()
                    for _ in model.unroll(frames, FirstFrameFeed(first[:, :n].to(dtype))):
                        pass
                    ms = 1000 * (time.perf_counter() - t0) / len(frames)
                    if r:
                        best[k, n] = min(best.get((k, n), float("inf")), ms)
    table = "| memory (frames) | ms/frame, 1 object | ms/frame, 3 objects |\n|---|---|---|\n" + "\n".join(
        f"| {k}{' (the shipped default)' if k == base.memory else ''} | {best[k, 1]:.1f} | {best[k, 3]:.1f} |"
        for k in models
    )
    about = (
        f", {str(dtype).removeprefix('torch.')}. The shipped one-shot default's loop over {args.frames} frames at "
        f"{SIZE[1]}x{SIZE[0]}, the sizes alternating, best of {args.rounds - 1} rounds after a warm-up."
    )
    title = "### Speed by memory size"
    report("memory_frames", title, "memory_frames.py", argv, args.threads, about, table, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
