"""``recvos segment``: segment the objects of one video (file or frame folder) into a folder of masks."""

from __future__ import annotations

import argparse
import logging

from recvos.cli.options import add_model_options

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment objects in a video or frame folder",
        description="Write one DAVIS-palette PNG per frame (named after the frames) and optionally an overlay video.",
    )
    p.add_argument("input", help="video file or folder of frames")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mask", help="object-id PNG of the first frame")
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
    p.add_argument("--frame", type=int, default=0, help="frame of --box/--points (default: 0)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the mask PNGs")
    p.add_argument(
        "--overlay", metavar="OUT.mp4", help="also write an H.264 video with the masks drawn over the frames"
    )
    add_model_options(p)
    p.add_argument(
        "--online-steps", type=int, default=0, help="online-learning steps on the annotated frame(s)"
    )
    p.add_argument("--objectness-threshold", type=float, default=0.5, help="zero-shot: minimum objectness")
    p.add_argument("--overwrite", action="store_true", help="write into an existing non-empty output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from recvos.data.frames import open_frames
    from recvos.inference.pipelines import segment_to_folder
    from recvos.inference.segmenter import load_model

    prompt = None
    if args.box is not None or args.points is not None:
        from recvos.inference.pipelines import BoxOrClicks
        from recvos.prompts import parse_box, parse_points

        points, labels = parse_points(args.points) if args.points is not None else (None, None)
        box = parse_box(args.box) if args.box is not None else None
        prompt = BoxOrClicks(frame=args.frame, box=box, points=points, labels=labels)
    kind = "zero-shot" if args.zero_shot else "one-shot"
    seg = load_model(
        args.model,
        args.device,
        kind=kind,
        threads=args.threads,
        max_size=args.max_size,
        objectness_threshold=args.objectness_threshold,
    )
    with open_frames(args.input) as source:
        bar = tqdm(total=source.num_frames, unit="frame", desc="segment", disable=args.no_progress)
        with bar:
            report = segment_to_folder(
                seg,
                source,
                args.output,
                mask=args.mask,
                masks_dir=args.masks,
                prompt=prompt,
                overlay=args.overlay,
                zero_shot=args.zero_shot,
                online_steps=args.online_steps,
                overwrite=args.overwrite,
                progress=bar,
            )
    if report.finetune_seconds:
        print(f"online learning: {report.finetune_seconds:.1f} s ({args.online_steps} steps)")
    print(
        f"segmented {report.frames} frames in {report.seconds:.1f} s ({report.fps:.2f} frames/s) -> {args.output}"
    )
    return 0
