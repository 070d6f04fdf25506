"""Training throughput (clips/s) of the recvos trainer on this machine, light and paper RVOS in one run.

Each configuration runs the real training loop (``recvos.training.Trainer``: clip sampling + augmentation,
forward unroll with teacher forcing, soft-IoU loss, backward, AdamW step) on synthetic clips at the DAVIS
training size 240x427, T=5 frames, batch 2, one object per clip (DAVIS-2016), fp32 on CPU (AMP is CUDA-only).
The first step (warm-up: allocations, oneDNN primitive creation) is dropped; reported are the median and the
best per-step clips/s over the remaining steps (each step time includes loading its batch, data workers off);
on a machine shared with other jobs the best step is the steadier figure.
As a reference in the same run, the data pipeline alone (ClipDataset + augmentation) is timed too.

Usage::

    .venv/bin/python benchmarks/train_throughput.py            # writes its section of BENCHMARKS.md
    .venv/bin/python benchmarks/train_throughput.py --quick    # light model only, no file written
    .venv/bin/python benchmarks/train_throughput.py --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from _common import cpu_name, write_section  # noqa: E402  (benchmarks/ is on sys.path)

from recvos.training.config import load_config
from recvos.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- train_throughput:start -->", "<!-- train_throughput:end -->"

#: (label, model name, model options, measured steps after the warm-up step)
CONFIGS = [
    ("rvos-st / efficientnet_lite0 (default light)", "rvos-st", {"backbone": "efficientnet_lite0"}, 6),
    ("rvos-st / resnet101 (paper)", "rvos-st", {"backbone": "resnet101"}, 3),
]


def base_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    h, w = args.size
    return [
        f"out={out}",
        "train.progress=false",
        "train.tensorboard=false",
        "val.every=0",
        f"train.device={args.device}",
        f"train.amp={args.amp}",
        f"train.batch_size={args.batch}",
        "train.ckpt_every=100000",
        f"data.size=[{h}, {w}]",
        f"data.num_frames={args.frames}",
        f"data.max_objects={args.objects}",
        "data.num_workers=0",
        "data.clips_per_epoch=64",
        "data.mix.real=0",
        "data.mix.synthetic=1",
        f"data.synthetic.size=[{h}, {w}]",
        "data.synthetic.pool=2",
        f"data.synthetic.num_frames={args.frames + 3}",
        f"data.synthetic.num_objects={args.objects}",
        "loss.iou=1",
        "loss.bce=0",
        "augment.enabled=true",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
    ]


def run_config(args, label: str, name: str, options: dict, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        opts = [f"model.options.{k}={v}" for k, v in options.items()]
        cfg = load_config(
            ROOT / "configs" / "smoke_synthetic.yaml",
            [
                *base_overrides(args, out),
                f"model.name={name}",
                "model.options={}",
                "model.options.hidden_size=128",
                "model.options.backbone_weights=null",
                "model.options.mode=one-shot",
                *opts,
                f"train.steps={steps + 1}",
            ],
        )
        t0 = time.perf_counter()
        Trainer(cfg).fit()
        wall = time.perf_counter() - t0
        recs = [json.loads(x) for x in (out / "logs.jsonl").read_text().splitlines()]
    per_step = [r["clips_per_s"] for r in recs if "clips_per_s" in r][1:]
    from recvos.models.factory import build_model
    from recvos.models.state_dicts import count_parameters

    params = count_parameters(build_model(name, **options))
    return {
        "label": label,
        "clips_per_s": statistics.median(per_step),
        "min": min(per_step),
        "max": max(per_step),
        "steps": len(per_step),
        "wall_s": wall,
        "params_m": params / 1e6,
    }


def data_pipeline(args) -> float:
    """Clips/s of the data pipeline alone (same settings, synthetic source, augmentation on)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs" / "smoke_synthetic.yaml", base_overrides(args, Path(tmp)))
        ds = Trainer(cfg)._train_dataset()
        ds[0]  # builds the synthetic pool
        n = 8
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            ds[i]
        return n / (time.perf_counter() - t0)


def write_report(text: str) -> None:
    write_section("train_throughput", text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="light model only, 2 measured steps, no file written")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--size", type=int, nargs=2, default=[240, 427])
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    configs = CONFIGS[:1] if args.quick else CONFIGS
    load_before = os.getloadavg()[0]
    rows = []
    for label, name, options, steps in configs:
        r = run_config(args, label, name, options, 2 if args.quick else steps)
        print(
            f"{r['label']}: {r['clips_per_s']:.3f} clips/s median of {r['steps']} steps, best {r['max']:.3f} "
            f"(worst {r['min']:.3f}), {r['params_m']:.1f} M params, run {r['wall_s']:.0f} s",
            flush=True,
        )
        rows.append(r)
    dp = data_pipeline(args)
    load_after = os.getloadavg()[0]
    print(f"data pipeline alone: {dp:.1f} clips/s", flush=True)
    if args.quick or args.no_write:
        return 0
    dev = cpu_name() if args.device == "cpu" else torch.cuda.get_device_name(0)
    h, w = args.size
    lines = [
        "## Training throughput (`benchmarks/train_throughput.py`)",
        "",
        f"Command: `.venv/bin/python benchmarks/train_throughput.py` ({date.today().isoformat()}). Machine: {dev}, "
        f"torch {torch.__version__}, {args.threads} threads, device {args.device}, AMP {args.amp}. The real training "
        f"loop on synthetic clips, {h}x{w}, T={args.frames}, batch {args.batch}, {args.objects} object(s) per clip, "
        "teacher forcing, soft-IoU loss, AdamW; per-step clips/s after one warm-up step (batch loading "
        "included, no data workers). The CPU cores were shared with other jobs during the run (1-minute load "
        f"average {load_before:.1f} before, {load_after:.1f} after, on {os.cpu_count()} cores): the best step is the "
        "steadier figure, the median shows the contention.",
        "",
        "| model | params (M) | clips/s (median) | clips/s (best step) | s/step (best) | measured steps |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['params_m']:.1f} | {r['clips_per_s']:.3f} | {r['max']:.3f} "
            f"| {args.batch / r['max']:.2f} | {r['steps']} |"
        )
    lines += ["", f"Data pipeline alone (ClipDataset + augmentation, same size): {dp:.1f} clips/s."]
    write_report("\n".join(lines))
    print("wrote BENCHMARKS.md section", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
