"""Options shared by the subcommands that run a model (``segment``, ``predict``)."""

from __future__ import annotations

import argparse


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --device, --threads, --max-size, --random-weights."""
    p.add_argument(
        "--model", default=None, help="checkpoint path or model name (default: the shipped weights)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's choice, the cores)"
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=240,
        help="processing size, shorter side in pixels, at least 16; 0: full resolution (default: 240)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow --model NAME (a registered architecture, untrained): its masks are meaningless",
    )


def check_model_options(args: argparse.Namespace) -> None:
    """The model options' values, checked before anything is loaded (RecvosError naming the option)."""
    from recvos.errors import RecvosError
    from recvos.inference.inputs import check_max_size

    threads = getattr(args, "threads", None)
    if isinstance(threads, int) and threads < 1:
        raise RecvosError(f"--threads {threads}: must be 1 or more (or left out for the default)")
    check_max_size(args.max_size)


def sequence_names(values: list[str] | str | None) -> list[str] | None:
    """``--sequences a b,c`` -> ["a", "b", "c"]: spaces and commas both separate names (predict and evaluate)."""
    if not values:
        return None
    if isinstance(values, str):
        values = [values]
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return list(dict.fromkeys(names)) or None


#: the methods of recvos.prompts, its DEFAULT_METHOD first (a copy, so that building the parser imports
#: nothing heavy; tests/test_prompt_head.py checks it against the registry)
PROMPT_METHODS = ("grabcut", "learned")
