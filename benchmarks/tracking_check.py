"""Never worse than optical flow? Small objects, several objects and same-kind distractors on held-out videos.

The failure users see on their own videos is not drift but loss: small objects and crowded ids vanish
within a few frames. This check builds such videos from what we hold without touching DAVIS-2016 val: each
of the 5 held-out DAVIS-2016 *training* videos (never trained on) gets two small objects cut from the other
held-out videos pasted in with their own motion (scale 0.15-0.4 of the frame), plus an unlabelled second
copy of one of them elsewhere (a distractor of the same kind). All objects are given on frame 0 (or where
they first appear) and scored per object with the official semi-supervised protocol, side by side with
copying the first mask and OpenCV DIS optical-flow propagation, in one run. "kept" is the share of
(object, frame) pairs where the object is visible in the ground truth and its id has at least one pixel in
the prediction.

    python benchmarks/tracking_check.py --models default runs/x/checkpoints/best.pt --write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from _common import (  # noqa: E402  (benchmarks/ is on sys.path)
    add_model_variants,
    cpu_name,
    held_out_composites,
    model_variants,
    variant_options,
    write_section,
)

from recvos.data.clips import ArrayVideo
from recvos.data.masks import first_appearance, object_ids
from recvos.evaluation.protocols import evaluate_arrays
from recvos.inference.dataset import open_sequence
from recvos.inference.segmenter import load_model

SIZE = (240, 427)


def build_clips(root: str, frames: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Two small objects of the next two held-out videos, and an unlabelled second copy of the first one."""
    out = {}
    for name, _, (f, ids, _) in held_out_composites(
        root, frames, seed, donors=(1, 2, 1), scale=(0.15, 0.4), max_offset=0.4
    ):
        ids[ids == ids.max()] = 0  # the copy pasted last is an unlabelled distractor
        out[f"{name}+2+distractor"] = (f, ids)
    return out


def copy_first(frames: np.ndarray, ids: np.ndarray) -> np.ndarray:
    first = first_appearance(ids)
    pred = np.zeros_like(ids)
    for o, t in first.items():
        pred[t:][:, ids[t] == o] = o
    return pred


def dis_flow(frames: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Warp the previous id map with DIS flow (nearest); objects enter with their ground truth."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    first = first_appearance(ids)
    h, w = ids.shape[1:]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    pred = np.zeros_like(ids)
    prev_gray = None
    for t in range(len(frames)):
        gray = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
        if t:
            flow = dis.calc(gray, prev_gray, None)
            pred[t] = cv2.remap(
                pred[t - 1].astype(np.float32),
                gx + flow[..., 0],
                gy + flow[..., 1],
                cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            ).astype(ids.dtype)
        for o, t0 in first.items():
            if t0 == t:
                pred[t][ids[t] == o] = o
        prev_gray = gray
    return pred


def recvos_predictor(model: str | None, options: dict[str, Any], online: dict[str, Any]):
    """The Segmenter's masks (``model``: None for the shipped default; ``options``: Segmenter options;
    ``online``: open_sequence's online-learning options)."""
    seg = load_model(model, kind="one-shot", **options)

    def run(frames: np.ndarray, ids: np.ndarray) -> np.ndarray:
        state = open_sequence(seg, ArrayVideo("clip", frames, ids), **online)
        return np.stack([m for _, _, m in seg.propagate(state)])

    return run


def kept(gt: np.ndarray, pred: np.ndarray, min_area: float = 0.001) -> float:
    hits = total = 0
    first = first_appearance(gt)
    for o in object_ids(gt):
        for t in range(first[o] + 1, len(gt)):
            if (gt[t] == o).mean() >= min_area:
                total += 1
                hits += bool((pred[t] == o).any())
    return hits / max(total, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/data/davis2016")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    add_model_variants(ap)
    ap.add_argument(
        "--per-object",
        action="store_true",
        help="also a table of each object's J-Mean (official protocol) by method, with its area on its first frame",
    )
    ap.add_argument(
        "--figure",
        nargs="*",
        default=[],
        metavar="CLIP",
        help="clips (e.g. mallard-fly+2+distractor) to show in docs/tracking_check.jpg with --write: one row "
        "per recvos method, 5 evenly spaced frames, ground truth outlined in white",
    )
    ap.add_argument(
        "--figure-out",
        default=None,
        metavar="JPG",
        help="write the --figure overlays to this file (also without --write, which then leaves "
        "docs/tracking_check.jpg alone)",
    )
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    clips = build_clips(args.root, args.frames, args.seed)
    methods = [("copy first mask", copy_first), ("DIS optical flow", dis_flow)]
    methods += [
        (f"recvos {label}", recvos_predictor(m, kw, online)) for label, m, kw, online in model_variants(args)
    ]
    rows, per_object, all_preds = [], {}, {}
    for label, predict in methods:
        t0 = time.perf_counter()
        preds = {name: predict(f, ids) for name, (f, ids) in clips.items()}
        seconds = time.perf_counter() - t0
        all_preds[label] = preds
        gts = {name: ids for name, (_, ids) in clips.items()}
        res = evaluate_arrays(gts, preds)
        g = res.global_metrics
        per_object[label] = {(o.sequence, o.object_id): float(np.mean(o.j)) for o in res.objects}
        keep = float(np.mean([kept(gts[n], preds[n]) for n in clips]))
        rows.append((label, g["J&F-Mean"], g["J-Mean"], g["F-Mean"], keep, seconds))
        print(label, rows[-1][1:], flush=True)
    n_obj = sum(len(object_ids(ids)) for _, ids in clips.values())
    lines = ["| method | J&F | J-Mean | F-Mean | kept | s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.0f} |" for r in rows]
    if args.per_object:
        labels = [r[0] for r in rows if r[0].startswith("recvos")]
        lines += [
            "",
            "| clip | object | area on its first frame | " + " | ".join(f"J, {x}" for x in labels) + " |",
            "|---|---|---|" + "---|" * len(labels),
        ]
        for name, (_, ids) in clips.items():
            first = first_appearance(ids)
            for o in object_ids(ids):
                area = float((ids[first[o]] == o).mean())
                js = " | ".join(f"{per_object[x][(name, o)]:.3f}" for x in labels)
                lines.append(f"| {name} | {o} | {100 * area:.2f}% | {js} |")
    body = (
        "## Tracking check: small objects, several objects, same-kind distractors (held-out videos)\n\n"
        f"Command: `python benchmarks/tracking_check.py {variant_options(args)}"
        + (" --per-object" if args.per_object else "")
        + (f" --figure {' '.join(args.figure)}" if args.figure else "")
        + f" --write` on {cpu_name()}, "
        f"{args.threads} threads. {len(clips)} clips of {args.frames} frames at 240x427 ({n_obj} labelled objects): "
        "each held-out DAVIS-2016 training video with two small objects of other held-out videos pasted in "
        "(scale 0.15-0.4) and an unlabelled copy of one of them; official semi-supervised protocol per object. "
        "kept: share of visible (object, frame) pairs whose id is still predicted.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    figure = None
    if args.figure:
        from figures import grid, outline

        from recvos.inference.overlay import blend

        unknown = sorted(set(args.figure) - set(clips))
        if unknown:
            raise SystemExit(f"--figure {' '.join(unknown)}: not a clip; choose from {', '.join(clips)}")
        tiles, names = [], []
        for name in args.figure:
            f, ids = clips[name]
            picks = np.linspace(0, len(f) - 1, 5).round().astype(int)
            for label in [r[0] for r in rows if r[0].startswith("recvos")]:
                tiles += [outline(blend(f[t], all_preds[label][name][t]), ids[t] > 0) for t in picks]
                names.append(f"{name}, {label}")
        figure = grid(tiles, cols=5, width=1600)
        body += (
            f"\n![tracking check overlays](docs/tracking_check.jpg)\n\nRows of `docs/tracking_check.jpg` "
            f"(frames {', '.join(map(str, picks))}; prediction filled, ground truth outlined in white): "
            + "; ".join(f"{i + 1}. {n}" for i, n in enumerate(names))
            + ".\n"
        )
    print(body)
    if figure is not None and (args.write or args.figure_out):
        from figures import save_jpg

        default = Path(__file__).resolve().parents[1] / "docs" / "tracking_check.jpg"
        save_jpg(Path(args.figure_out) if args.figure_out else default, figure)
    if args.write:
        write_section("tracking_check", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
