"""glibc's malloc keeping freed memory for the next frame, against its defaults (a tried idea, not adopted).

With glibc's defaults (dynamic mmap and trim thresholds), the tens of MB of feature maps a frame frees go back
to the system and are faulted back in, page by page, on the next frame. ``GLIBC_TUNABLES`` can keep them:
blocks up to 32 MB from the heap (``glibc.malloc.mmap_threshold``) and up to 1 GB of free heap kept
(``glibc.malloc.trim_threshold``). The setting is read when a process starts, so each measurement is a fresh
child process, with glibc's defaults or with the tunables, the two alternating for ``--rounds`` rounds so that
a change of the machine's load hits both alike. A child runs the Segmenter with the shipped one-shot default
end to end (resizing, model, upsampling, id maps) over the first ``--frames`` frames of the bear video decoded
at its 854x480, objects given on frame 0 as in ``onnx_runtime.py``'s end-to-end rows (its ``bear_firsts``
and ``first_ids``): the bear's mask; with 3 objects also two boxes (later ids on top). A warm-up pass, then
the best of two timed passes. It reports ms/frame (wall clock), the CPU time per frame of its threads together
(user and system, from ``getrusage``: steadier than the wall clock on a shared machine, and page faults show in
the system time), minor page faults per frame and its peak resident memory. The table gives, per setting, the
median over rounds of each child's figures.

Usage::

    .venv/bin/python benchmarks/freed_memory.py --write
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch starts OpenMP

from _common import report  # noqa: E402  (benchmarks/ is on sys.path)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
SETTINGS = {"glibc's defaults (recvos as it is)": "", f"GLIBC_TUNABLES={TUNABLES}": TUNABLES}


def child(frames: int, threads: int) -> dict:
    import torch
    from onnx_runtime import bear_firsts, first_ids

    from recvos.data.frames import open_frames
    from recvos.inference.segmenter import Segmenter
    from recvos.models.loading import resolve_model

    torch.set_num_threads(threads)
    seg = Segmenter(resolve_model(None))
    with open_frames(SHARED / "videos" / "cotracker_bear.mp4") as src:
        raw = [f for _, f in zip(range(frames), src, strict=False)]
    mask = SHARED / "davis2016" / "Annotations" / "480p" / "bear" / "00000.png"
    id_maps = {n: first_ids(first[0], raw[0].shape[:2]) for n, first in bear_firsts(mask).items()}
    out = {"precision": str(seg.dtype).removeprefix("torch.")}
    for n, ids in id_maps.items():
        best, faults, cpu = float("inf"), [], []
        for rnd in range(3):
            state = seg.init_state(raw)
            seg.add_mask(state, 0, ids)
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            count = sum(1 for _ in seg.propagate(state))
            ms = 1000 * (time.perf_counter() - t0) / count
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            if rnd:
                best = min(best, ms)
                faults.append((r1.ru_minflt - r0.ru_minflt) / count)
                cpu.append(
                    (1000 * (r1.ru_utime - r0.ru_utime) / count, 1000 * (r1.ru_stime - r0.ru_stime) / count)
                )
        out[f"ms{n}"], out[f"faults{n}"] = best, min(faults)
        out[f"user{n}"], out[f"sys{n}"] = min(cpu)
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.frames, args.threads)))
        return 0
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    cmd = [sys.executable, __file__, "--child", "--frames", str(args.frames), "--threads", str(args.threads)]
    for r in range(args.rounds):
        for name, value in SETTINGS.items():
            env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
            if value:
                env["GLIBC_TUNABLES"] = value
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(r, name, runs[name][-1], file=sys.stderr, flush=True)
    med = {
        name: {k: statistics.median(x[k] for x in rs) for k in rs[0] if k != "precision"}
        for name, rs in runs.items()
    }
    table = (
        "| setting | ms/frame, 1 object | ms/frame, 3 objects | CPU ms/frame (user + system), 1 object "
        "| CPU ms/frame (user + system), 3 objects | page faults per frame, 1 / 3 objects | peak RSS (MB) |\n"
        "|---|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {name} | {m['ms1']:.1f} | {m['ms3']:.1f} | {m['user1']:.1f} + {m['sys1']:.1f} "
            f"| {m['user3']:.1f} + {m['sys3']:.1f} | {m['faults1']:.0f} / {m['faults3']:.0f} | {m['rss_mb']:.0f} |"
            for name, m in med.items()
        )
    )
    precision = runs[next(iter(runs))][0]["precision"]
    about = (
        f", {precision}. The shipped one-shot default end to end (Segmenter) on the first {args.frames} frames of "
        f"bear at 854x480, 1 and 3 objects; each row the median over {args.rounds} child processes per setting, "
        "alternating, of each one's best of two passes after a warm-up (CPU time: of its pass with less of it)."
    )
    title = "### Freed memory kept for the next frame (tried, not adopted)"
    report("freed_memory", title, "freed_memory.py", argv, args.threads, about, table, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
