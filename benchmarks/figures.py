"""Multi-object check on ``cutie_examples/bike`` and the overlay figures of the README.

- bike (4 frames of DAVIS bmx-trees, first frame annotated with two ids; by eye id 1 is the bike and id 2 the
  rider, although the data README names them the other way round): segments the clip
  with the one-shot default and saves an overlay grid to ``docs/bike_overlay.jpg``. DAVIS-2016 annotates
  rider and bike together as one object in bmx-trees (its frame-0 mask equals the union of ids 1 and 2),
  so the union of the predicted objects is scored against that ground truth (J and F per frame);
  the identities are checked by eye on the figure.
- a DAVIS-2016 val sequence: overlay strip ``docs/val_overlay.jpg``.

    python benchmarks/figures.py --shared ../shared/data --write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import write_section  # noqa: E402  (benchmarks/ is on sys.path)

from recvos.data.datasets import open_dataset
from recvos.data.frames import open_frames
from recvos.data.masks import read_mask
from recvos.evaluation.metrics import f_measure, jaccard
from recvos.inference.overlay import blend
from recvos.inference.segmenter import load_model

ROOT = Path(__file__).resolve().parents[1]


def grid(images: list[np.ndarray], cols: int, width: int) -> np.ndarray:
    h, w = images[0].shape[:2]
    scale = width / (w * cols)
    small = [cv2.resize(im, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA) for im in images]
    while len(small) % cols:
        small.append(np.zeros_like(small[0]))
    rows = [np.concatenate(small[i : i + cols], 1) for i in range(0, len(small), cols)]
    return np.concatenate(rows, 0)


def save_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--model", default=None, help="one-shot checkpoint (default: the shipped weights)")
    ap.add_argument("--val-sequence", default="car-roundabout")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true", help="write docs/*.jpg and the BENCHMARKS.md section")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shared = Path(args.shared)
    seg = load_model(args.model)

    # --- bike: multi-object
    bike = shared / "cutie_examples"
    frames = list(open_frames(bike / "JPEGImages" / "bike"))
    state = seg.init_state(frames)
    seg.add_mask(state, frame_idx=0, mask=read_mask(bike / "Annotations" / "bike" / "00000.png"))
    preds = [ids for _, _, ids in seg.propagate(state)]
    gt_ds = open_dataset("davis2016", shared / "davis2016", "val")["bmx-trees"]
    gt = np.stack([gt_ds.load_mask(i) > 0 for i in range(len(preds))])
    union = np.stack([p > 0 for p in preds])
    j = jaccard(gt, union)
    f = f_measure(gt, union)
    areas = [{int(o): int((p == o).sum()) for o in (1, 2)} for p in preds]
    lines = [
        "| frame | J (id 1 ∪ id 2 vs DAVIS-2016 GT) | F | id 1 (bike) px | id 2 (rider) px |",
        "|---|---|---|---|---|",
    ]
    for t in range(len(preds)):
        lines.append(f"| {t} | {j[t]:.3f} | {f[t]:.3f} | {areas[t][1]} | {areas[t][2]} |")
    table = "\n".join(lines)
    print(table)
    bike_fig = grid([blend(fr, p) for fr, p in zip(frames, preds, strict=True)], cols=2, width=854)

    # --- a val sequence strip
    seq = open_dataset("davis2016", shared / "davis2016", "val")[args.val_sequence]
    n = len(seq.frame_paths)
    state = seg.init_state((seq.load_frame(i) for i in range(n)), output_size=seq.frame_size)
    first = seq.load_mask(0)
    seg.add_mask(
        state,
        frame_idx=0,
        mask=cv2.resize(first.astype(np.uint8), seq.frame_size[::-1], interpolation=cv2.INTER_NEAREST),
    )
    picks = set(np.linspace(0, n - 1, 4).round().astype(int).tolist())
    strip = [blend(seq.load_frame(t), ids) for t, _, ids in seg.propagate(state) if t in picks]
    val_fig = grid(strip, cols=4, width=1280)

    if args.write:
        save_jpg(ROOT / "docs" / "bike_overlay.jpg", bike_fig)
        save_jpg(ROOT / "docs" / f"val_overlay_{args.val_sequence}.jpg", val_fig)
        section = (
            "## Multi-object check: cutie_examples/bike\n\n"
            f"Command: `python benchmarks/figures.py --write` (model: {args.model or 'shipped one-shot default'}). "
            "Two objects given on frame 0 (by eye: 1 = bike, 2 = rider); DAVIS-2016 annotates them as one object in "
            "bmx-trees, so the union of the two predictions is scored against it. Overlay: "
            "`docs/bike_overlay.jpg`.\n\n" + table + "\n"
        )
        write_section("multiobject_bike", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
