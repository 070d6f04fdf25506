"""Processing resolution: the shipped one-shot default at a shorter side of 240, 360 and 480 pixels.

The DAVIS-2016 frames in ``../shared/data`` are 240p, so only the real 854x480 mp4 files with ground truth
can tell what a larger processing size gives: ``cotracker_bear.mp4`` (DAVIS-2016 ``bear``, a training video:
the decision is made on it) and ``cotracker_paragliding-launch.mp4`` (a val video: reported, never used to
decide). Each video is segmented from its first ground-truth mask by the Segmenter (the user's path) at each
size; J and F (official measures) are computed at 854x480 over frames 1..n-2; ms/frame is the wall time of
propagation, with ``--threads`` threads, all sizes in one run.

    python benchmarks/resolution.py --shared ../shared/data --write
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from _common import cpu_name, write_section  # noqa: E402  (benchmarks/ is on sys.path)

from recvos.data.datasets import open_dataset
from recvos.evaluation.metrics import jaccard_and_f
from recvos.inference.segmenter import load_model

VIDEOS = [("bear", "train: decides"), ("paragliding-launch", "val: reported only")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--sizes", default="240,360,480")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    davis = {split: open_dataset("davis2016", args.shared / "davis2016", split) for split in ("train", "val")}
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        seg = load_model(max_size=size)
        for name, role in VIDEOS:
            seq = davis["train"][name] if name in davis["train"].names else davis["val"][name]
            state = seg.init_state(str(args.shared / "videos" / f"cotracker_{name}.mp4"))
            seg.add_mask(state, frame_idx=0, mask=seq.load_mask(0))
            t0 = time.perf_counter()
            preds = [ids > 0 for _, _, ids in seg.propagate(state)]
            ms = 1000 * (time.perf_counter() - t0) / len(preds)
            n = min(len(preds), len(seq.frame_paths))
            gt = np.stack([seq.load_mask(i) > 0 for i in range(n)])
            j, f = jaccard_and_f(gt, np.stack(preds[:n]))
            rows.append((size, name, role, float(j[1:-1].mean()), float(f[1:-1].mean()), ms))
            print(rows[-1], file=sys.stderr, flush=True)
    lines = ["| shorter side | video | role | J | F | ms/frame |", "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {n} | {r} | {j:.3f} | {f:.3f} | {ms:.0f} |" for s, n, r, j, f, ms in rows]
    body = (
        "## Processing resolution (real 854x480 mp4 files)\n\n"
        f"Command: `python benchmarks/resolution.py --write`, {args.threads} threads ({cpu_name()}), "
        f"{date.today().isoformat()}. The shipped one-shot default (trained at 240x427) through the Segmenter "
        "at each shorter side; J/F at 854x480 over frames 1..n-2. bear is a training video (the decision is "
        "made on it), paragliding-launch a val video (reported only).\n\n" + "\n".join(lines) + "\n"
    )
    print(body)
    if args.write:
        write_section("resolution", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
