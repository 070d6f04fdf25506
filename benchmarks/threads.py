"""Thread settings on a shared CPU: recvos's frame loop idle and next to one busy process, side by side.

For each setting (threads, OpenMP wait policy) a fresh subprocess times the default one-shot model's loop
(``unroll`` over 240x427 frames, 1 object, warm-up excluded), first alone, then while another process keeps
one core busy (a pure-Python spin loop, as another job on the machine would). Writes the ms/frame table to
BENCHMARKS.md with ``--write``.

    python benchmarks/threads.py --write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import cpu_name, write_section  # noqa: E402  (benchmarks/ is on sys.path)

CHILD = r"""
import json, sys, time, torch
from recvos.models.feed import FirstFrameFeed
from recvos.models.loading import resolve_model
threads, frames = int(sys.argv[1]), int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
model = resolve_model(None).optimize_for_inference()
x = torch.rand(1, 3, 240, 427)
m = torch.zeros(1, 1, 240, 427); m[..., 60:180, 100:300] = 1
with torch.inference_mode():
    loop = model.unroll((x for _ in iter(int, 1)), FirstFrameFeed(m))
    for _ in range(5):
        next(loop)
    t = time.perf_counter()
    for _ in range(frames):
        next(loop)
print(json.dumps({"ms": 1000 * (time.perf_counter() - t) / frames, "threads": torch.get_num_threads()}))
"""

SPIN = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def run_child(threads: int, frames: int, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(threads), str(frames)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    settings = [
        ("torch default (2 threads), OpenMP default wait policy", 0, {}),
        ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, {"OMP_WAIT_POLICY": "PASSIVE"}),
        ("1 thread", 1, {}),
    ]
    rows = []
    for label, threads, extra in settings:
        env = {**base, **extra}
        idle = run_child(threads, args.frames, env)
        spin = subprocess.Popen([sys.executable, "-c", SPIN])
        try:
            time.sleep(0.5)
            loaded = run_child(threads, args.frames, env)
        finally:
            spin.kill()
            spin.wait()
        rows.append((label, idle["ms"], loaded["ms"]))
        print(f"{label}: idle {idle['ms']:.1f} ms/frame, loaded {loaded['ms']:.1f} ms/frame", flush=True)
    lines = ["| setting | idle ms/frame | with one busy process | loaded / idle |", "|---|---|---|---|"]
    lines += [f"| {label} | {i:.1f} | {lo:.1f} | {lo / i:.2f}x |" for label, i, lo in rows]
    body = (
        "## Threads on a shared CPU\n\n"
        f"Command: `python benchmarks/threads.py --frames {args.frames} --write` on {cpu_name()} "
        f"({os.cpu_count()} cores). The shipped one-shot model's loop at 240x427, 1 object, alone and next "
        "to one process spinning on a core.\n\n" + "\n".join(lines) + "\n"
    )
    print(body)
    if args.write:
        write_section("threads", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
