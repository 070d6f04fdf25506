"""``recvos segment``: segment the objects of one video (file or frame folder) into a folder of masks."""

from __future__ import annotations

import argparse
import logging

from recvos.cli.options import (
    PROMPT_METHODS,
    add_model_options,
    add_online_steps_option,
    add_zero_shot_options,
    check_model_options,
)

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  recvos segment video.mp4 --mask first.png -o out/ --overlay out.mp4
  recvos segment frames/ --zero-shot -o out/
  recvos segment video.mp4 --masks masks/ -o out/            # objects given on any frames
  recvos segment video.mp4 --box 120,40,380,300 --frame 10 -o out/
  recvos segment video.mp4 --mask first.png -o out/ --start 100 --end 400 --stride 2
  recvos segment video.mp4 --mask first.png -o out/ --resume   # after an interruption"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment objects in a video or frame folder",
        description="Write one DAVIS-palette PNG per frame (named after the frames) and optionally an overlay "
        "video. Inputs, masks and output paths are checked before the model is loaded.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="video file or folder of frames")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mask", help="object-id PNG of the first (segmented) frame")
    g.add_argument(
        "--masks",
        metavar="DIR",
        help="folder of object-id PNGs named after their frames (objects may appear later)",
    )
    g.add_argument("--zero-shot", action="store_true", help="discover objects without masks")
    p.add_argument(
        "--box",
        metavar="X0,Y0,X1,Y1",
        help="the object as a box in frame pixels (instead of a mask; object id 1)",
    )
    p.add_argument(
        "--points",
        metavar='"x,y,+;x,y,-"',
        help="the object as clicks in frame pixels, + on the object, - on the background (with or without --box)",
    )
    p.add_argument("--frame", type=int, default=0, help="frame number of --box/--points (default: 0)")
    p.add_argument(
        "--prompt-method",
        choices=PROMPT_METHODS,
        default=None,
        help=f"how --box/--points become the first mask (default: {PROMPT_METHODS[0]}: the shipped prompt "
        "head; grabcut: OpenCV, no training)",
    )
    p.add_argument(
        "--convert-masks",
        action="store_true",
        help="accept RGB colour masks (one id per colour) and anti-aliased binary masks (threshold at 128)",
    )
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the mask PNGs")
    p.add_argument(
        "--overlay", metavar="OUT.mp4", help="also write an H.264 video with the masks drawn over the frames"
    )
    p.add_argument(
        "--probs",
        metavar="DIR",
        help="also write each object's probabilities as greyscale PNGs DIR/<obj_id>/<frame>.png (255 = 1.0)",
    )
    p.add_argument("--start", type=int, default=0, help="first frame number to segment (default: 0)")
    p.add_argument("--end", type=int, default=None, help="stop before this frame number (default: the end)")
    p.add_argument("--stride", type=int, default=1, help="segment every N-th frame from --start (default: 1)")
    add_model_options(p)
    p.add_argument(
        "--runtime",
        choices=("torch", "onnxruntime"),
        default="torch",
        help="run the model with PyTorch or with ONNX Runtime (CPU; the onnx extra) (default: torch)",
    )
    p.add_argument(
        "--onnx",
        metavar="FILE",
        help="with --runtime onnxruntime: a file from recvos export --onnx (default: export --model now)",
    )
    add_online_steps_option(p)
    p.add_argument("--objectness-threshold", type=float, default=0.5, help="zero-shot: minimum objectness")
    add_zero_shot_options(p)
    p.add_argument("--overwrite", action="store_true", help="write into an existing non-empty output folder")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in OUT_DIR from its last written mask (rerun the same command "
        "with --resume); objects are re-prompted from that mask",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from recvos.inference.inputs import processing_size
    from recvos.inference.segmenter import load_model
    from recvos.inference.video import BoxOrClicks, plan_segment, run_segment

    check_model_options(args)
    if args.runtime == "onnxruntime":
        from recvos.inference.onnx import require_onnx

        require_onnx("onnxruntime", "onnx")
    prompt = None
    if args.box is not None or args.points is not None:
        from recvos.prompts import parse_box, parse_points

        points, labels = parse_points(args.points) if args.points is not None else (None, None)
        box = parse_box(args.box) if args.box is not None else None
        prompt = BoxOrClicks(
            frame=args.frame, box=box, points=points, labels=labels, method=args.prompt_method
        )
    # every input and output path is checked before the model loads (seconds) and before any progress bar
    plan = plan_segment(
        args.input,
        args.output,
        mask=args.mask,
        masks_dir=args.masks,
        prompt=prompt,
        overlay=args.overlay,
        probs=args.probs,
        zero_shot=args.zero_shot,
        online_steps=args.online_steps,
        overwrite=args.overwrite,
        resume=args.resume,
        convert_masks=args.convert_masks,
        start=args.start,
        end=args.end,
        stride=args.stride,
    )
    try:
        try:
            seg = load_model(
                args.model,
                args.device,
                kind="zero-shot" if args.zero_shot else "one-shot",
                threads=args.threads,
                max_size=args.max_size,
                objectness_threshold=args.objectness_threshold,
                precision=args.precision,
                memory=args.memory,
                small_object_size=args.small_object_size,
                flip=args.flip,
                tracker=args.tracker,
                handoff=args.handoff,
                allow_random=args.random_weights,
                runtime=args.runtime,
                onnx=args.onnx,
                onnx_size=processing_size(tuple(plan.source.size), args.max_size),
            )
        except BaseException:
            plan.remove_created()
            raise
        if plan.resumed_from is not None:
            print(f"resuming after frame {plan.resumed_from}: {plan.total} frames left")
        with tqdm(total=plan.total, unit="frame", desc="segment", disable=args.no_progress) as bar:
            report = run_segment(seg, plan, progress=bar)
    finally:
        plan.close()
    if report.finetune_seconds:
        print(f"online learning: {report.finetune_seconds:.1f} s ({args.online_steps} steps)")
    print(
        f"segmented {report.frames} frames in {report.seconds:.1f} s ({report.fps:.2f} frames/s) -> {args.output}"
    )
    return 0
