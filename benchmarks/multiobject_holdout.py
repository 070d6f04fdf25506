"""Multi-object one-shot check on composite clips built from the held-out DAVIS-2016 training videos.

DAVIS-2016 has one object per video, so multi-object tracking is measured on composites: each of the 5
held-out training videos (never trained on) gets one object of another held-out video pasted in, with the
same seeded placement for every model; both objects are given on frame 0 and scored per object with the
official protocol (J&F over the 2 x 5 objects). Compares checkpoints in one run.

    python benchmarks/multiobject_holdout.py --models runs/default_oneshot/checkpoints/step_00000400.pt default --write
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from _common import (  # noqa: E402  (benchmarks/ is on sys.path)
    add_model_variants,
    held_out_composites,
    model_variants,
    variant_options,
    write_section,
)

from recvos.data.clips import ArrayVideo
from recvos.evaluation.protocols import evaluate_arrays
from recvos.inference.dataset import open_sequence
from recvos.inference.segmenter import load_model


def composites(root: str, frames: int, size: tuple[int, int], seed: int):
    """One object of the next held-out video pasted into each held-out video."""
    clips = held_out_composites(
        root, frames, seed, donors=(1,), size=size, scale=(0.5, 0.8), max_offset=0.3, hflip=0.5
    )
    return {f"{name}+{donors[0]}": clip for name, donors, clip in clips}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/davis2016")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    add_model_variants(ap)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clips = composites(args.root, args.frames, (240, 427), args.seed)
    rows = []
    for spec, model, kw, online in model_variants(args):
        seg = load_model(model, kind="one-shot", **kw)
        gts, preds = {}, {}
        for name, (f, ids, _) in clips.items():  # the user path: objects prompted where they first appear
            state = open_sequence(seg, ArrayVideo(name, f, ids), **online)
            preds[name] = np.stack([m for _, _, m in seg.propagate(state)])
            gts[name] = ids
        res = evaluate_arrays(gts, preds)
        g = res.global_metrics
        per = {}
        for o in res.objects:
            per.setdefault(o.sequence, []).append(f"{float(np.mean(o.j)):.2f}")
        rows.append((spec, g["J&F-Mean"], g["J-Mean"], g["F-Mean"], per))
        print(spec, g["J&F-Mean"], g["J-Mean"], per, flush=True)
    names = list(clips)
    lines = [
        "| model | J&F | J-Mean | F-Mean | " + " | ".join(f"J {n} (base, pasted)" for n in names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for spec, jf, j, f, per in rows:
        lines.append(
            f"| {spec} | {jf:.3f} | {j:.3f} | {f:.3f} | "
            + " | ".join(", ".join(per[n]) for n in names)
            + " |"
        )
    body = (
        "## Multi-object one-shot on held-out composites\n\n"
        f"Command: `python benchmarks/multiobject_holdout.py {variant_options(args)} --write` "
        f"({args.threads} threads). Each held-out DAVIS-2016 training video (never trained on) with one object of "
        f"the next held-out video pasted in (seeded, same for every model), first {args.frames} frames at 240x427, "
        "both objects given on frame 0, official semi-supervised protocol per object.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(body)
    if args.write:
        write_section("multiobject_holdout", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
