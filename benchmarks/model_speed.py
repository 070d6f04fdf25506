"""Forward time per frame, parameters and FLOPs of the recvos models on CPU, all in one run.

Configurations (the issue's list): rvos-st with resnet101 (the paper's) and with efficientnet_lite0, s2s with
vgg16 (the paper's) and with efficientnet_lite0; plus, as references in the same run, the light RVOS without
inference optimisation, rvos-t (objects batched), the shipped one-shot configuration (with the first-frame
reference) and the small S2S of the architecture comparison. Each at 240x427 (DAVIS 480p downscaled, RVOS's internal
size) and 480x854, with 1 and 3 objects.

Timed: one whole ``model.step`` (backbone, decoder, logits upsampled to the input size) under
``torch.inference_mode``, the model's own sigmoid output fed back as the previous masks, after warm-up.
"Optimised" models went through ``model.optimize_for_inference()`` (BatchNorm folded into convs,
channels-last). FLOPs from ``torch.utils.flop_counter.FlopCounterMode`` (2 per multiply-add) for one step.

Usage::

    .venv/bin/python benchmarks/model_speed.py            # writes its section of BENCHMARKS.md
    .venv/bin/python benchmarks/model_speed.py --quick    # 240x427 only, no file written
"""

from __future__ import annotations

import argparse
import copy
import itertools
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
from _common import cpu_name, write_section  # noqa: E402  (benchmarks/ is on sys.path)
from torch.utils.flop_counter import FlopCounterMode

from recvos.models.factory import build_model
from recvos.models.feed import FirstFrameFeed

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- model_speed:start -->", "<!-- model_speed:end -->"

#: (label, model name, options, optimise for inference)
CONFIGS = [
    ("rvos-st / efficientnet_lite0", "rvos-st", {"backbone": "efficientnet_lite0"}, True),
    (
        "rvos-st / efficientnet_lite0 + first-frame reference (shipped one-shot)",
        "rvos-st",
        {"backbone": "efficientnet_lite0", "reference": True},
        True,
    ),
    ("rvos-st / efficientnet_lite0 (eager ref.)", "rvos-st", {"backbone": "efficientnet_lite0"}, False),
    ("rvos-t / efficientnet_lite0", "rvos-t", {"backbone": "efficientnet_lite0"}, True),
    ("rvos-st / resnet101 (paper)", "rvos-st", {"backbone": "resnet101"}, True),
    ("s2s / efficientnet_lite0", "s2s", {"backbone": "efficientnet_lite0"}, True),
    (
        "s2s / efficientnet_lite0, hidden 128 (configs/compare_s2s_oneshot.yaml)",
        "s2s",
        {"backbone": "efficientnet_lite0", "hidden_size": 128, "decoder_dims": (64, 32, 32, 16, 16)},
        True,
    ),
    ("s2s / vgg16 (paper)", "s2s", {"backbone": "vgg16"}, True),
]
SIZES = [(240, 427), (480, 854)]
OBJECTS = [1, 3]


def make_inputs(size: tuple[int, int], objects: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(1, 3, *size, generator=g)
    masks = torch.zeros(1, objects, *size)
    h, w = size
    for o in range(objects):  # separate boxes
        masks[
            :, o, h // 4 : 3 * h // 4, (o * w) // objects + w // 20 : ((o + 1) * w) // objects - w // 20
        ] = 1
    return frame, masks


def time_steps(model, frame, masks, budget_s: float, max_reps: int) -> tuple[float, float, int]:
    """Median and minimum ms per frame of the model's loop (``unroll``) on a repeated frame: 1-3 warm-up
    frames, then up to ``max_reps`` timed frames within ``budget_s``."""
    times: list[float] = []
    with torch.inference_mode():
        loop = model.unroll(itertools.repeat(frame), FirstFrameFeed(masks))
        t0 = time.perf_counter()
        next(loop)
        first = time.perf_counter() - t0
        for _ in range(2 if first < 0.2 else 0):
            next(loop)
        start = time.perf_counter()
        while len(times) < max_reps and (len(times) < 2 or time.perf_counter() - start < budget_s):
            t = time.perf_counter()
            next(loop)
            times.append(time.perf_counter() - t)
        loop.close()
    return statistics.median(times) * 1000, min(times) * 1000, len(times)


def count_flops(model, frame, masks) -> float:
    with torch.inference_mode():
        state = model.init_state(frame, masks)
        with FlopCounterMode(display=False) as counter:
            model.step(frame, state, masks)
    return counter.get_total_flops() / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="240x427 only; do not write BENCHMARKS.md")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed steps per configuration")
    parser.add_argument(
        "--only", default=None, help="run only configurations whose label contains this; no file written"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = SIZES[:1] if args.quick else SIZES

    rows = []
    t_start = time.perf_counter()
    for label, name, opts, optimise in CONFIGS:
        if args.only and args.only not in label:
            continue
        torch.manual_seed(0)
        base = build_model(name, **opts).eval()
        params = sum(p.numel() for p in base.parameters()) / 1e6
        model = copy.deepcopy(base).optimize_for_inference() if optimise else base
        for size in sizes:
            for objects in OBJECTS:
                frame, masks = make_inputs(size, objects)
                if optimise:
                    frame = frame.contiguous(memory_format=torch.channels_last)
                gflops = count_flops(base, frame, masks)
                ms, best, reps = time_steps(model, frame, masks, args.budget, max_reps=30)
                row = (label, f"{size[0]}x{size[1]}", objects, ms, best, reps, params, gflops)
                rows.append(row)
                print(
                    f"{label:44s} {row[1]:>8s} O={objects}  {ms:8.1f} ms/frame (min {best:.1f}, {reps} reps)  "
                    f"{params:6.2f} M params  {gflops:7.1f} GFLOPs",
                    flush=True,
                )
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")

    if not args.quick and not args.only:
        write_report(args.output, rows, args.threads, total)
    return 0


def write_report(path: Path, rows: list[tuple], threads: int, total: float) -> None:
    lines = [
        START,
        "## Model speed (CPU)",
        "",
        f"Command: `.venv/bin/python benchmarks/model_speed.py` ({date.today().isoformat()}, {total:.0f} s in all).",
        f"Machine: {cpu_name()}, {threads} threads (`torch.set_num_threads`), torch {torch.__version__}, "
        f"Python {platform.python_version()}; the CPU was shared with other jobs, so times are indicative.",
        "",
        "One whole `step` per frame (backbone once per frame, decoder per object, logits upsampled to the input "
        "size), batch 1, median and minimum over the timed steps (the minimum is the better estimate when other jobs "
        "share the CPU), random weights, `torch.inference_mode`. "
        '"optimised" = `model.optimize_for_inference()` (BatchNorm folded, channels-last); the eager reference '
        "is the same model without it. FLOPs (2 per multiply-add) from `FlopCounterMode` for one step; "
        "parameters include S2S's initializer backbone.",
        "",
        "| model / backbone | input | objects | ms/frame (median) | ms/frame (min) | timed steps | params (M) "
        "| GFLOPs/frame |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, size, objects, ms, best, reps, params, gflops in rows:
        lines.append(
            f"| {label} | {size} | {objects} | {ms:.1f} | {best:.1f} | {reps} | {params:.2f} | {gflops:.1f} |"
        )
    lines += [
        "",
        "Target: light RVOS (efficientnet_lite0) at 240x427, 1 object, under 40 ms/frame on 2 CPU "
        "threads (the paper's ResNet-101 RVOS: 44 ms/frame on a P100 GPU).",
        END,
    ]
    section = "\n".join(lines)
    write_section("model_speed", section, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
