"""End-to-end speed of ``recvos segment`` on a real 480p mp4, next to the model alone, and online learning.

In one run, per model (random weights unless a checkpoint is given; speed does not depend on the weights):

- **model only**: the 82 frames decoded and resized to the processing size beforehand, then ``init_state`` +
  one ``step`` per frame under ``torch.inference_mode`` (the segmenter's model: optimised for inference),
  plus the same loop with the eager (unoptimised) model as a reference;
- **end to end**: :func:`recvos.inference.video.segment_to_folder` — the code behind ``recvos segment``:
  decode (PyAV), resize, model, bilinear upsampling to 854x480, id map, palette PNG written per frame —
  and the same with the overlay mp4;
- **online learning**: ``Segmenter.finetune`` on the first annotated frame (seconds per sequence).

Each timed pass follows a warm-up; model-only and end-to-end figures are the best of two passes (the CPU
may be shared). Usage::

    .venv/bin/python benchmarks/segment_fps.py --threads 2 --write
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from _common import cpu_name, write_section  # noqa: E402  (benchmarks/ is on sys.path)

from recvos.models.feed import FirstFrameFeed

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
START, END = "<!-- segment_fps:start -->", "<!-- segment_fps:end -->"


def model_only(model, frames: list[torch.Tensor], first: torch.Tensor, repeats: int = 2) -> float:
    """Frames/s of the model's own loop (``unroll``) over pre-decoded frames [1, 3, h, w]: best of ``repeats``
    passes after a warm-up of 10 frames (the first steps of a process are slow while oneDNN builds its kernels)."""
    best = 0.0
    with torch.inference_mode():
        for _ in model.unroll(frames[:10], FirstFrameFeed(first)):
            pass
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in model.unroll(frames, FirstFrameFeed(first)):
                pass
            best = max(best, len(frames) / (time.perf_counter() - t0))
    return best


def main(argv: list[str] | None = None) -> int:
    from recvos.data.frames import open_frames
    from recvos.data.masks import read_mask
    from recvos.inference.inputs import frame_to_tensor, resize_binary
    from recvos.inference.segmenter import load_model
    from recvos.inference.video import segment_to_folder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", type=Path, default=SHARED / "videos" / "cotracker_bear.mp4")
    p.add_argument(
        "--mask", type=Path, default=SHARED / "davis2016" / "Annotations" / "480p" / "bear" / "00000.png"
    )
    p.add_argument("--models", nargs="+", default=["rvos-st", "s2s"], help="model names or checkpoint paths")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-size", type=int, default=240)
    p.add_argument("--online-steps", type=int, default=20)
    p.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = p.parse_args(argv)
    if not args.video.is_file() or not args.mask.is_file():
        print(f"missing {args.video} or {args.mask}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    args.load_before = os.getloadavg()[0]

    with open_frames(args.video) as src:
        raw = list(src)
    H, W = raw[0].shape[:2]
    ids = read_mask(args.mask)
    rows = []
    for name in args.models:
        seg = load_model(name, "cpu", max_size=args.max_size, allow_random=True)
        h, w = seg.init_state(raw[:1]).proc_size
        frames = [frame_to_tensor(f, (h, w), seg.device) for f in raw]
        first = torch.from_numpy(resize_binary(ids > 0, (h, w))).float()[None, None]
        fast = copy.deepcopy(seg.model).optimize_for_inference()  # what the Segmenter propagates with
        fps_fast = model_only(fast, frames, first)
        fps_eager = model_only(seg.model, frames, first)
        del frames
        # warm-up of the whole path on 3 frames, then the timed runs
        warm = seg.init_state(raw[:3])
        seg.add_mask(warm, 0, ids)
        list(seg.propagate(warm))
        with tempfile.TemporaryDirectory() as tmp:
            runs = [segment_to_folder(seg, args.video, Path(tmp) / f"m{k}", mask=args.mask) for k in range(2)]
            e2e = max(runs, key=lambda r: r.fps)
            ov = segment_to_folder(
                seg, args.video, Path(tmp) / "m2", mask=args.mask, overlay=Path(tmp) / "ov.mp4"
            )
        state = seg.init_state(raw[:1])
        seg.add_mask(state, 0, ids)
        ol = seg.finetune(state, steps=args.online_steps)
        res = state.finetune_result
        seg.restore_weights()
        rows.append((name, (h, w), fps_eager, fps_fast, e2e.fps, ov.fps, e2e.frames, ol, res.steps))
        print(
            f"{name}: model-only {fps_fast:.2f} frames/s (eager {fps_eager:.2f}), end-to-end {e2e.fps:.2f} "
            f"frames/s ({e2e.frames} frames), with overlay {ov.fps:.2f}; online learning {ol:.1f} s "
            f"for {res.steps} steps"
        )
        if args.write:  # after each model, so that an interrupted run keeps what it measured
            args.load_after = os.getloadavg()[0]
            write_report(ROOT / "BENCHMARKS.md", rows, args, (H, W), time.perf_counter() - t_all)
    return 0


def write_report(path: Path, rows: list[tuple], args, size: tuple[int, int], total: float) -> None:
    video = args.video.name
    lines = [
        START,
        "## Segmentation speed: `recvos segment` end to end, model only, online learning (CPU)",
        "",
        f"Command: `.venv/bin/python benchmarks/segment_fps.py --threads {args.threads} --write` "
        f"({date.today().isoformat()}, {total:.0f} s in all).",
        f"Machine: {cpu_name()}, {args.threads} threads, torch {torch.__version__}, Python "
        f"{platform.python_version()}; the CPU was shared with other jobs (1-min load average "
        f"{args.load_before:.1f} before, {args.load_after:.1f} after), so figures are indicative.",
        "",
        f"Input: `{video}` ({size[1]}x{size[0]}, {rows[0][6]} frames), first mask DAVIS-2016 `bear/00000.png`, "
        f"processing size `--max-size {args.max_size}`, 1 object, random weights (default architectures: "
        "efficientnet_lite0 backbone). *End to end* = decode + resize + model + upsample to the original size + "
        "palette PNG per frame (what `recvos segment` does, timed from the first decoded frame to the last PNG); "
        "*model only* = `init_state` + `step` on frames decoded and resized beforehand, with the segmenter's "
        "optimised model (BatchNorm folded, channels-last) and the eager model as a reference. Best of two "
        "passes after a warm-up.",
        "",
        "| model | processing size | model only, eager (frames/s) | model only (frames/s) | end to end (frames/s) "
        "| end to end + overlay mp4 (frames/s) | online learning (s / sequence) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (h, w), eager, fast, e2e, ov, _, ol, steps in rows:
        lines.append(
            f"| {name} | {w}x{h} | {eager:.2f} | {fast:.2f} | {e2e:.2f} | {ov:.2f} | {ol:.1f} ({steps} steps) |"
        )
    lines += [
        "",
        "Online learning: `Segmenter.finetune(state, steps)` on warped pairs of the first frame (backbone frozen, "
        "BatchNorm statistics frozen), including the held-out validation of the fine-tuned weights.",
        END,
    ]
    write_section("segment_fps", "\n".join(lines), path)
    print(f"wrote {path}")

    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
