"""Prompts -> mask on DAVIS-2016 val frames: box IoU and the standard simulated clicker, per method.

Frames: every ``--stride``-th frame (default 10: 0, 10, 20, ...) of the 20 val videos (never trained on).
The methods see the 427x240 JPEG frames of ``JPEGImages/240p``; every mask is evaluated at the official
854x480 of ``Annotations/480p`` (predictions upsampled bilinearly, thresholded at 0.5). The clicker
(:func:`recvos.prompts.next_click`) runs at 480p and its clicks are mapped to 240p pixels.

- box: the tight box of the ground truth, one call -> IoU;
- clicks: up to 20 clicks, stopping once IoU >= 0.90 after at least 5 clicks; mean IoU after 1, 3, 5
  clicks, NoC@85 and NoC@90 (20 when never reached);
- ms per click / per box: wall time of one ``mask_from_prompts`` call at 240p plus the upsampling, with
  2 OpenCV/torch threads.

Usage::

    .venv/bin/python benchmarks/interactive_prompts.py --root ../shared/data/davis2016 --write
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import cpu_name, write_section  # noqa: E402  (benchmarks/ is on sys.path)
from PIL import Image

from recvos.prompts import iou as iou_fn
from recvos.prompts import mask_from_prompts, mean_iou_at, noc, run_clicks

ROOT = Path(__file__).resolve().parents[1]
SECTION = "interactive_prompts"


def load_items(
    root: Path, split: str, stride: int, only: list[str] | None = None
) -> list[tuple[str, Path, Path]]:
    """(video, 240p frame, 480p mask) for every ``stride``-th frame of the split (of ``only`` if given)."""
    names = (root / "ImageSets" / "2016" / f"{split}.txt").read_text().split()
    names = [n for n in names if not only or n in only]
    items = []
    for name in names:
        for mask in sorted((root / "Annotations" / "480p" / name).glob("*.png"))[::stride]:
            items.append((name, root / "JPEGImages" / "240p" / name / f"{mask.stem}.jpg", mask))
    return items


def upsample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """bool [h, w] -> bool ``size`` (bilinear, >= 0.5)."""
    H, W = size
    return cv2.resize(mask.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR) >= 0.5


class _Clicks:
    """``predict(points, labels)`` for :func:`run_clicks`: 480p clicks -> 240p prompts -> 480p mask."""

    def __init__(self, frame: np.ndarray, size: tuple[int, int], method: str, options: dict) -> None:
        self.frame, self.size, self.method, self.options = frame, size, method, options
        self.previous: np.ndarray | None = None

    def __call__(self, points: list[tuple[int, int]], labels: list[int]) -> np.ndarray:
        h, w = self.frame.shape[:2]
        sx, sy = w / self.size[1], h / self.size[0]
        pts = [(min(w - 1, (x + 0.5) * sx), min(h - 1, (y + 0.5) * sy)) for x, y in points]
        self.previous = mask_from_prompts(
            self.frame, points=pts, labels=labels, method=self.method, previous=self.previous, **self.options
        )
        return upsample(self.previous, self.size)


def evaluate(
    method: str, items: list[tuple[str, Path, Path]], max_clicks: int, options: dict
) -> dict[str, float]:
    box_ious, box_secs, runs, click_secs = [], [], [], []
    last = None
    for i, (name, frame_path, mask_path) in enumerate(items):
        frame = np.asarray(Image.open(frame_path).convert("RGB"))
        gt = np.asarray(Image.open(mask_path)) > 127
        h, w = frame.shape[:2]
        H, W = gt.shape
        sx, sy = w / W, h / H
        if not gt.any():
            continue
        ys, xs = np.nonzero(gt)
        box = (xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy)
        t0 = time.perf_counter()
        pred = upsample(mask_from_prompts(frame, box=box, method=method, **options), (H, W))
        box_secs.append(time.perf_counter() - t0)
        box_ious.append(iou_fn(pred, gt))

        run = run_clicks(_Clicks(frame, (H, W), method, options), gt, max_clicks=max_clicks)
        runs.append(run.ious)
        click_secs += [s for s in run.seconds if s > 0]
        if name != last:
            print(f"[{method}] {i + 1}/{len(items)} {name}", file=sys.stderr, flush=True)
            last = name
    return {
        "frames": len(runs),
        "box": float(np.mean(box_ious)),
        "iou1": mean_iou_at(runs, 1),
        "iou3": mean_iou_at(runs, 3),
        "iou5": mean_iou_at(runs, 5),
        "noc85": float(np.mean([noc(r, 0.85, max_clicks) for r in runs])),
        "noc90": float(np.mean([noc(r, 0.90, max_clicks) for r in runs])),
        "ms_click": 1000 * float(np.mean(click_secs)),
        "ms_box": 1000 * float(np.mean(box_secs)),
        "clicks": len(click_secs),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "davis2016")
    ap.add_argument("--split", default="val")
    ap.add_argument("--stride", type=int, default=10, help="every N-th frame of each video (default 10)")
    ap.add_argument(
        "--methods", default="grabcut,learned", help="comma-separated methods of mask_from_prompts"
    )
    ap.add_argument(
        "--learned-model",
        default=None,
        help="a prompt-head checkpoint for 'learned' (default: the shipped one)",
    )
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument(
        "--sequences",
        default=None,
        help="comma-separated sequences of the split (e.g. held-out train videos)",
    )
    ap.add_argument(
        "--keep-all-parts", action="store_true", help="learned: keep mask parts without a positive click"
    )
    ap.add_argument("--no-clip-to-box", action="store_true", help="learned: keep mask parts outside the box")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    items = load_items(
        args.root, args.split, args.stride, args.sequences.split(",") if args.sequences else None
    )
    videos = len({v for v, _, _ in items})
    t0 = time.perf_counter()
    rows = []
    for method in args.methods.split(","):
        options = {}
        if method == "learned":
            options = {"keep_clicked_only": not args.keep_all_parts, "clip_to_box": not args.no_clip_to_box}
            if args.learned_model:
                options["model"] = args.learned_model
        r = evaluate(method, items, args.max_clicks, options)
        rows.append(
            f"| {method} | {r['box']:.3f} | {r['iou1']:.3f} | {r['iou3']:.3f} | {r['iou5']:.3f} | "
            f"{r['noc85']:.2f} | {r['noc90']:.2f} | {r['ms_click']:.0f} | {r['ms_box']:.0f} |"
        )
        print(rows[-1], flush=True)
    minutes = (time.perf_counter() - t0) / 60
    cmd = "python benchmarks/interactive_prompts.py --root ../shared/data/davis2016 --write"
    if args.stride != 10 or args.split != "val":
        cmd += f" --split {args.split} --stride {args.stride}"
    if args.sequences:
        cmd += f" --sequences {args.sequences}"
    body = f"""## Prompts -> mask: box and simulated clicks (DAVIS-2016 {args.split})

{len(items)} frames (every {args.stride}th frame of the {videos} {args.split} videos), methods fed the 427x240
frames, IoU at the official 854x480 (masks upsampled bilinearly). Clicks: the standard clicker
(`recvos.prompts.next_click`: interior point farthest from the boundary of the largest error region), up to
{args.max_clicks} clicks, stopping at IoU >= 0.90 after 5 clicks. ms: one `mask_from_prompts` call on
{args.threads} threads ({cpu_name()}). Targets of the issue: box mIoU >= 0.85, 3-click mIoU >= 0.80,
< 150 ms per click. {date.today().isoformat()}, {minutes:.1f} min.

| method | box mIoU | mIoU@1 | mIoU@3 | mIoU@5 | NoC@85 | NoC@90 | ms/click | ms/box |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

`{cmd}`
"""
    print(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
