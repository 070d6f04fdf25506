"""Options shared by the subcommands that run a model (``segment``, ``predict``)."""

from __future__ import annotations

import argparse


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --device, --threads, --max-size."""
    p.add_argument(
        "--model", default=None, help="checkpoint path or model name (default: the shipped weights)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's choice, the cores)"
    )
    p.add_argument(
        "--max-size", type=int, default=240, help="processing size, shorter side in pixels (default: 240)"
    )
