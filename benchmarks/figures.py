"""Multi-object check on ``cutie_examples/bike`` and the overlay figures of the README.

- bike (4 frames of DAVIS bmx-trees, first frame annotated with two ids; by eye id 1 is the bike and id 2 the
  rider, although the data README names them the other way round): segments the clip
  with the one-shot default and saves an overlay grid to ``docs/bike_overlay.jpg``. DAVIS-2016 annotates
  rider and bike together as one object in bmx-trees (its frame-0 mask equals the union of ids 1 and 2),
  so the union of the predicted objects is scored against that ground truth (J and F per frame);
  the identities are checked by eye on the figure.
- a DAVIS-2016 val sequence: overlay strip ``docs/val_overlay.jpg``.
- ``--worst K``: segments all 20 DAVIS-2016 val sequences, lists J-Mean per sequence (official protocol: frames
  1..n-2, predictions at the 854x480 annotation size) and saves an overlay strip of each of the K worst to
  ``docs/worst/<rank>_<seq>.jpg`` (prediction filled, ground-truth outline in white): the failures, shown.
- ``cutie_examples/judo``: objects given on the frames where they appear (0, 5, 8, 13), as a user adds them;
  overlay grid ``docs/judo_overlay.jpg``, checked by eye.
- ``cutie_examples/judo`` zero-shot, no annotation: the zero-shot model throughout (top row) against the
  zero-shot default, which hands the objects found on frame 5 to the one-shot tracker (bottom row);
  ``docs/zeroshot_judo_overlay.jpg``, checked by eye (people entering after the hand-off are not found).

    python benchmarks/figures.py --shared ../shared/data --worst 5 --write
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


def outline(rgb: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Draw the outline of the bool mask ``gt`` (any size) in white on ``rgb``."""
    H, W = rgb.shape[:2]
    g = cv2.resize(gt.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(g, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    out = rgb.copy()
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def worst_sequences(seg, root: Path, k: int) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """(markdown table of J-Mean per val sequence, [(name, overlay strip)] of the ``k`` worst)."""
    dataset = open_dataset("davis2016", root, "val")
    rows = []
    strips = {}
    for name in dataset.names:
        seq = dataset[name]
        n = len(seq.frame_paths)
        state = seg.init_state((seq.load_frame(i) for i in range(n)), output_size=seq.mask_size)
        seg.add_mask(state, frame_idx=0, mask=seq.load_mask(0))
        picks = set(np.linspace(0, n - 1, 5).round().astype(int).tolist())
        js, strip = [], []
        for t, _, ids in seg.propagate(state):
            gt = seq.load_mask(t) > 0
            js.append(float(jaccard(gt, ids > 0)[0]))
            if t in picks:
                strip.append(outline(blend(seq.load_frame(t), ids), gt))
        j = float(np.mean(js[1:-1]))
        rows.append((j, name))
        strips[name] = grid(strip, cols=len(strip), width=1600)
        print(f"{name}: J {j:.3f}", file=sys.stderr, flush=True)
    rows.sort()
    lines = ["| rank | sequence | J-Mean |", "|---|---|---|"]
    lines += [f"| {r + 1} | {name} | {j:.3f} |" for r, (j, name) in enumerate(rows)]
    lines.append(f"| | mean | {np.mean([j for j, _ in rows]):.3f} |")
    return "\n".join(lines), [(name, strips[name]) for _, name in rows[:k]]


#: the frames of cutie_examples/judo shown in its overlays (objects enter on 5, 8 and 13)
JUDO_PICKS = [0, 4, 5, 7, 8, 12, 13, 15]


def judo(seg, shared: Path, online_steps: int = 0) -> np.ndarray:
    """Overlay grid of cutie_examples/judo, each object added on the frame it is annotated on (then
    ``online_steps`` of online learning on those frames)."""
    folder = shared / "cutie_examples"
    frames = list(open_frames(folder / "JPEGImages" / "judo"))
    state = seg.init_state(frames)
    for path in sorted((folder / "Annotations" / "judo").glob("*.png")):
        ids = read_mask(path)
        t = int(path.stem)
        new = {int(o): ids == o for o in np.unique(ids) if o and int(o) not in state.object_ids}
        if new:
            seg.add_mask(state, frame_idx=t, mask=new)
    if online_steps:
        seg.finetune(state, steps=online_steps)
    preds = {t: ids for t, _, ids in seg.propagate(state)}
    return grid([blend(frames[t], preds[t]) for t in JUDO_PICKS], cols=4, width=1600)


def zero_shot_judo(shared: Path) -> tuple[np.ndarray, str]:
    """Two rows over cutie_examples/judo without annotation: the zero-shot model throughout, then the
    zero-shot default (hand-off to the one-shot tracker); and the ids each reports on the picked frames."""
    frames = list(open_frames(shared / "cutie_examples" / "JPEGImages" / "judo"))
    rows, lines = [], []
    for label, tracker in (("zero-shot model throughout", None), ("zero-shot default (hand-off)", "default")):
        seg = load_model(kind="zero-shot", tracker=tracker)
        preds = {t: (objs, ids) for t, objs, ids in seg.propagate(seg.init_state(frames), zero_shot=True)}
        rows += [blend(frames[t], preds[t][1]) for t in JUDO_PICKS]
        lines.append(f"| {label} | " + " | ".join(str(preds[t][0]) for t in JUDO_PICKS) + " |")
    head = "| frame | " + " | ".join(map(str, JUDO_PICKS)) + " |\n|---|" + "---|" * len(JUDO_PICKS) + "\n"
    return grid(rows, cols=len(JUDO_PICKS), width=2400), head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default="../shared/data")
    ap.add_argument("--model", default=None, help="one-shot checkpoint (default: the shipped weights)")
    ap.add_argument("--val-sequence", default="car-roundabout")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worst", type=int, default=0, help="overlay strips of the K worst val sequences")
    ap.add_argument(
        "--online-steps",
        type=int,
        default=0,
        help="online learning before segmenting bike and judo (default 0: none)",
    )
    ap.add_argument("--flip", action="store_true", help="segment with the test-time flip (one-shot figures)")
    ap.add_argument("--write", action="store_true", help="write docs/*.jpg and the BENCHMARKS.md section")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shared = Path(args.shared)
    seg = load_model(args.model, flip=args.flip)

    # --- bike: multi-object
    bike = shared / "cutie_examples"
    frames = list(open_frames(bike / "JPEGImages" / "bike"))
    state = seg.init_state(frames)
    seg.add_mask(state, frame_idx=0, mask=read_mask(bike / "Annotations" / "bike" / "00000.png"))
    if args.online_steps:
        seg.finetune(state, steps=args.online_steps)
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

    judo_fig = judo(seg, shared, args.online_steps)
    zero_fig, zero_table = zero_shot_judo(shared)
    print(zero_table)
    worst_table, worst = worst_sequences(seg, shared / "davis2016", args.worst) if args.worst else ("", [])
    if worst_table:
        print(worst_table)

    if args.write:
        save_jpg(ROOT / "docs" / "judo_overlay.jpg", judo_fig)
        save_jpg(ROOT / "docs" / "zeroshot_judo_overlay.jpg", zero_fig)
        for rank, (name, strip) in enumerate(worst, start=1):
            save_jpg(ROOT / "docs" / "worst" / f"{rank}_{name}.jpg", strip)
        if worst_table:
            images = "\n".join(
                f"![{name}](docs/worst/{r}_{name}.jpg)" for r, (name, _) in enumerate(worst, 1)
            )
            write_section(
                "worst_sequences",
                "## DAVIS-2016 val per sequence, and the worst five shown\n\n"
                f"Command: `python benchmarks/figures.py --worst {args.worst}{' --flip' if args.flip else ''} --write` (model: "
                f"{args.model or 'shipped one-shot default'}; Segmenter at its default size, masks at 854x480, "
                "J-Mean over frames 1..n-2). Strips: 5 evenly spaced frames, prediction filled, ground truth "
                "outlined in white.\n\n" + worst_table + "\n\n" + images + "\n",
            )
        save_jpg(ROOT / "docs" / "bike_overlay.jpg", bike_fig)
        save_jpg(ROOT / "docs" / f"val_overlay_{args.val_sequence}.jpg", val_fig)
        section = (
            "## Multi-object check: cutie_examples/bike\n\n"
            f"Command: `python benchmarks/figures.py{' --flip' if args.flip else ''} --write` "
            f"(model: {args.model or 'shipped one-shot default'}). "
            "Two objects given on frame 0 (by eye: 1 = bike, 2 = rider); DAVIS-2016 annotates them as one object in "
            "bmx-trees, so the union of the two predictions is scored against it. Overlay: "
            "`docs/bike_overlay.jpg`.\n\n" + table + "\n\n"
            "Zero-shot on `cutie_examples/judo` (no annotation; ids reported per frame; "
            "`docs/zeroshot_judo_overlay.jpg`, top row the zero-shot model throughout, bottom row the "
            "zero-shot default):\n\n" + zero_table + "\n"
        )
        write_section("multiobject_bike", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
