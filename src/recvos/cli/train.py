"""``recvos train --config configs/X.yaml [key=value ...] [--resume RUN_DIR] [--out RUN_DIR]``.

Runs the same way under ``torchrun --nproc_per_node=K -m recvos train ...`` (DDP, decided at run time).
"""

from __future__ import annotations

import argparse

from recvos.errors import RecvosError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train RVOS or S2S from a YAML preset",
        description="Train a model. Config: dataclass defaults < --config preset < key=value overrides "
        "(dotted keys, YAML values, e.g. train.steps=100 optim.lr=1e-4 model.options.backbone=resnet18).",
        epilog="""examples:
  recvos train --config configs/smoke_synthetic.yaml --out runs/smoke
  recvos train --config configs/rvos_oneshot_davis2016.yaml optim.lr=5e-4 train.batch_size=8
  recvos train --resume runs/smoke                      # continue after a crash
  torchrun --nproc_per_node=4 -m recvos train --config configs/rvos_youtubevos.yaml""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML preset (configs/*.yaml)")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint"
    )
    p.add_argument(
        "--out", metavar="RUN_DIR", help="run directory (checkpoints, logs.jsonl, config.yaml, tb/)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per process (default: torch's choice, the cores)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise RecvosError(f"--threads {args.threads}: give at least 1 (or leave it out for torch's default)")
    from recvos.training.config import apply_overrides, load_config
    from recvos.training.trainer import resume_config, train

    if args.resume:
        if args.out and args.out != args.resume:
            raise RecvosError("--resume RUN_DIR continues in RUN_DIR; drop --out (or give the same folder)")
        cfg = resume_config(args.resume)
        if args.config:
            raise RecvosError(
                "--resume uses the run's saved config.yaml; pass changes as key=value overrides, not --config"
            )
        cfg = apply_overrides(cfg, args.overrides)
        cfg.out = args.resume
    else:
        if not args.config and not args.overrides:
            raise RecvosError(
                "give --config configs/<preset>.yaml (e.g. configs/smoke_synthetic.yaml) or key=value settings"
            )
        cfg = load_config(args.config, args.overrides)
        if args.out:
            cfg.out = args.out
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    result = train(cfg, resume=bool(args.resume))
    jf = f", best validation score {result.best_jf:.4f}" if result.best_jf is not None else ""
    print(f"trained to step {result.step}{jf}; run directory {result.run_dir}")
    return 0
