"""``recvos export``: export a model for deployment (ONNX: the per-frame step and init_state, state explicit)."""

from __future__ import annotations

import argparse

from recvos.errors import RecvosError

EXAMPLES = """examples:
  recvos export --onnx model.onnx                       # the shipped one-shot default, for 240x427 frames
  recvos export --onnx model.onnx --model run/best.pt --size 240x320
  recvos segment video.mp4 --mask first.png -o out/ --runtime onnxruntime --onnx model.onnx

Shipped weights are made from a training checkpoint by python -m recvos.training.export (maintainers)."""


def parse_size(text: str) -> tuple[int, int]:
    """``"240x427"`` (height x width) -> (240, 427), or RecvosError naming --size."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise RecvosError(f"--size {text!r}: give HEIGHTxWIDTH in pixels, e.g. --size 240x427") from None
    if h < 16 or w < 16:
        raise RecvosError(f"--size {text}: both sides must be at least 16 pixels")
    return h, w


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX (run it with recvos segment --runtime onnxruntime)",
        description="Write FILE (the per-frame step: frame, previous masks and recurrent state in; logits, "
        "objectness and the next state out; any number of objects) and FILE's sibling <stem>.init.onnx "
        "(the state of entering objects), with the model's provenance as metadata. Needs the onnx extra: "
        'pip install -e ".[onnx]".',
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--onnx", required=True, metavar="FILE", help="the ONNX file to write (e.g. model.onnx)")
    p.add_argument(
        "--model", default=None, help="checkpoint path or model name (default: the shipped weights)"
    )
    p.add_argument(
        "--zero-shot", action="store_true", help="the zero-shot default instead of the one-shot one"
    )
    p.add_argument(
        "--size",
        default="240x427",
        metavar="HxW",
        help="the frame size the graphs take: the processing size of the videos (default: %(default)s, "
        "--max-size 240 of a 16:9 video)",
    )
    p.add_argument("--random-weights", action="store_true", help="allow --model NAME (untrained)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recvos.inference.onnx import export_onnx, require_onnx
    from recvos.models.loading import resolve_model

    size = parse_size(args.size)
    require_onnx("onnx", "onnxscript")
    model = resolve_model(
        args.model, kind="zero-shot" if args.zero_shot else "one-shot", allow_random=args.random_weights
    )
    source = args.model or ("default zero-shot" if args.zero_shot else "default one-shot")
    paths = export_onnx(model, args.onnx, size=size, source=source)
    print(f"exported {model.name} ({source}) for {size[1]}x{size[0]} frames -> {paths[0]} and {paths[1]}")
    return 0
