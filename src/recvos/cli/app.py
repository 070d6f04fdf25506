"""``recvos app``: start the local web app (segment a video from a box or clicks in the browser)."""

from __future__ import annotations

import argparse

from recvos.cli.options import PROMPT_METHODS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "app",
        help="start the web app (local, offline)",
        description="Serve a web page to open a video, add objects with a box or clicks, propagate, correct any "
        "frame and re-propagate, and download the masks (zip of palette PNGs) and an overlay mp4. Binds "
        "127.0.0.1 by default; nothing is fetched from the internet.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument(
        "--model", default=None, help="one-shot checkpoint or model name (default: the shipped weights)"
    )
    p.add_argument(
        "--zero-shot-model", default=None, help="zero-shot checkpoint (default: the shipped weights)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--max-size", type=int, default=240, help="processing size, shorter side (default: 240)")
    p.add_argument(
        "--prompt-method",
        choices=PROMPT_METHODS,
        default=None,
        help=f"how boxes and clicks become masks (default: {PROMPT_METHODS[0]}; grabcut: OpenCV, no training)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, default=500.0, help="largest video accepted, MB (default: 500)"
    )
    p.add_argument(
        "--max-frames", type=int, default=3000, help="longest video accepted, frames (default: 3000)"
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=1920 * 1080,
        help="largest frame accepted, pixels (default: 1920*1080)",
    )
    p.add_argument(
        "--session-timeout",
        type=float,
        default=30.0,
        help="end a session this many seconds after its page stops answering (default: 30)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=3600.0,
        help="end a session idle this many seconds (default: 3600)",
    )
    p.add_argument(
        "--workdir", default=None, help="folder for the sessions' temporary files (default: the system's)"
    )
    paths = p.add_mutually_exclusive_group()
    paths.add_argument(
        "--allow-paths",
        dest="allow_paths",
        action="store_true",
        default=None,
        help="allow opening videos by server path",
    )
    paths.add_argument("--no-paths", dest="allow_paths", action="store_false", help="uploads only")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from recvos.errors import RecvosError

    try:
        from recvos.app import AppConfig, serve
    except ModuleNotFoundError as e:
        raise RecvosError(
            f"recvos app needs {e.name}: install the extra with pip install 'recvos[app]'"
        ) from None
    config = AppConfig(
        model=args.model,
        zero_shot_model=args.zero_shot_model,
        device=args.device,
        threads=args.threads,
        max_size=args.max_size,
        method=args.prompt_method,
        max_upload_mb=args.max_upload_mb,
        max_frames=args.max_frames,
        max_pixels=args.max_pixels,
        heartbeat_timeout=args.session_timeout,
        idle_timeout=args.idle_timeout,
        workdir=args.workdir,
        allow_paths=args.allow_paths,
    )
    serve(args.host, args.port, config)
    return 0
