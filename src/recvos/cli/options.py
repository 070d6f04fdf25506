"""Options shared by the subcommands that run a model (``segment``, ``predict``)."""

from __future__ import annotations

import argparse

#: processing sizes (shorter side): the default, and ``--quality`` (measured in benchmarks/resolution.py)
DEFAULT_SIZE = 240
QUALITY_SIZE = 480
#: recvos.inference.segmenter.SMALL_OBJECT_SIZE (a copy, so that building the parser imports nothing heavy;
#: tests/test_segmenter.py checks it)
SMALL_OBJECT_SIZE = 360
#: recvos.inference.online.ONLINE_STEPS (a copy, for the same reason; the same test checks it)
ONLINE_STEPS = 50


def add_online_steps_option(p: argparse.ArgumentParser) -> None:
    """--online-steps [N]: 0 by default, the recommended :data:`ONLINE_STEPS` when given without a value."""
    p.add_argument(
        "--online-steps",
        type=int,
        nargs="?",
        const=ONLINE_STEPS,
        default=0,
        metavar="N",
        help=f"online learning: fine-tune on the annotated frame(s) of each video for N steps first (default 0: "
        f"off; the flag alone: {ONLINE_STEPS}, the recommended setting: +7 J on held-out videos, about 10 s per "
        "video with one object on 2 CPU cores, more with more objects; BENCHMARKS.md, Online learning)",
    )


def add_model_options(p: argparse.ArgumentParser) -> None:
    """--model, --device, --threads, --max-size, --quality, --small-object-size, --precision, --memory,
    --flip, --random-weights."""
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
        default=None,
        help=f"processing size, shorter side in pixels, at least 16; 0: full resolution (default: {DEFAULT_SIZE})",
    )
    p.add_argument(
        "--quality",
        action="store_true",
        help=f"process at a shorter side of {QUALITY_SIZE} (sharper boundaries, about 4.5x slower; "
        "BENCHMARKS.md, Processing resolution)",
    )
    p.add_argument(
        "--small-object-size",
        type=int,
        default=SMALL_OBJECT_SIZE,
        metavar="SIZE",
        help=f"process videos where a given object covers under 0.5%% of the frame at this shorter side "
        f"(upscaling if needed; 0: off; default: {SMALL_OBJECT_SIZE}); small objects are lost at {DEFAULT_SIZE} "
        "(BENCHMARKS.md, Small objects)",
    )
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="number format of the PyTorch runtime; auto: bf16 on CPUs with native bf16, i.e. AVX512-BF16 or AMX "
        "(about 25%% faster there, same masks to an IoU of 0.99), else fp32 (bf16 is emulated and slower there; "
        "BENCHMARKS.md) (default: auto)",
    )
    p.add_argument(
        "--memory",
        type=int,
        default=None,
        metavar="FRAMES",
        help="frames each object's matching memory holds, 1..64 (default: the model's; the shipped one-shot "
        "model: 6). More follows appearance changes longer and costs a little speed",
    )
    p.add_argument(
        "--flip",
        action="store_true",
        help="test-time augmentation: also segment every frame's mirror image and average the two (one-shot "
        "objects and the zero-shot tracker; PyTorch runtime; about 1.7x the time; BENCHMARKS.md, Flip at "
        "test time)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow --model NAME (a registered architecture, untrained): its masks are meaningless",
    )


#: recvos.inference.segmenter.HANDOFF (a copy, so that building the parser imports nothing heavy;
#: tests/test_segmenter.py checks it)
HANDOFF = 6


def add_zero_shot_options(p: argparse.ArgumentParser) -> None:
    """--tracker, --handoff: how zero-shot propagation follows the objects it discovers."""
    p.add_argument(
        "--tracker",
        default="default",
        metavar="MODEL",
        help="zero-shot: the one-shot model that follows the discovered objects after --handoff frames "
        "(default: the shipped one-shot weights; none: the zero-shot model throughout)",
    )
    p.add_argument(
        "--handoff",
        type=int,
        default=HANDOFF,
        metavar="N",
        help=f"zero-shot: frames the zero-shot model discovers on before the tracker takes over (default: {HANDOFF})",
    )


def check_model_options(args: argparse.Namespace) -> None:
    """The model options' values, checked before anything is loaded (RecvosError naming the option)."""
    from recvos.errors import RecvosError
    from recvos.inference.inputs import check_max_size

    if getattr(args, "flip", False) and getattr(args, "runtime", "torch") == "onnxruntime":
        raise RecvosError(
            "--flip runs each frame and its mirror image as a batch of two, which an exported ONNX graph does "
            "not take; use --runtime torch (the default)"
        )
    if isinstance(getattr(args, "handoff", None), int):
        from recvos.inference.segmenter import check_handoff

        check_handoff(args.handoff, "--handoff")
    if getattr(args, "memory", None) is not None:
        from recvos.models.memory import check_memory_frames

        check_memory_frames(args.memory, "--memory")
    threads = getattr(args, "threads", None)
    if isinstance(threads, int) and threads < 1:
        raise RecvosError(f"--threads {threads}: must be 1 or more (or left out for the default)")
    if getattr(args, "quality", False):
        if args.max_size is not None:
            raise RecvosError(f"--quality is --max-size {QUALITY_SIZE}; give one of them, not both")
        args.max_size = QUALITY_SIZE
    elif args.max_size is None:
        args.max_size = DEFAULT_SIZE
    check_max_size(args.max_size)
    if hasattr(args, "small_object_size"):
        from recvos.inference.segmenter import check_small_object_size

        check_small_object_size(args.small_object_size)


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
PROMPT_METHODS = ("learned", "grabcut")
