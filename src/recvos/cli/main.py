"""The ``recvos`` command: one subcommand per module in this package, each only parses and calls the library."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from importlib import metadata

from recvos.errors import RecvosError

#: subcommand -> module in recvos.cli with ``add_parser(subparsers)`` and ``run(args) -> int``
SUBCOMMANDS = {
    "segment": "recvos.cli.segment",
    "predict": "recvos.cli.predict",
    "evaluate": "recvos.cli.evaluate",
    "train": "recvos.cli.train",
    "models": "recvos.cli.models",
    "app": "recvos.cli.app",
    "export": "recvos.cli.export",
}


#: OSErrors that a user's environment causes (full disk, permissions, read-only file system): one line, exit 2
USER_OS_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)

EPILOG = """examples:
  recvos segment video.mp4 --mask first.png -o out/ --overlay out.mp4
  recvos predict --dataset davis2016 --root data/davis2016 --split val -o results/
  recvos evaluate --gt data/davis2016 --pred results/ --split val
  recvos train --config configs/smoke_synthetic.yaml --out runs/smoke
  recvos models
  recvos export --onnx model.onnx"""


def version() -> str:
    try:
        return metadata.version("recvos")
    except metadata.PackageNotFoundError:  # a source tree that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recvos",
        description="Video object segmentation with recurrent networks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"recvos {version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def one_line(message: str) -> str:
    """A message on one line (a multi-line message from a library underneath is joined)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def main(argv: list[str] | None = None) -> int:
    # OpenMP threads that spin while they wait for each other collapse (10-20x slower) as soon as another
    # process shares the cores (benchmarks/threads.py); passive waiting costs little when the machine is idle.
    # Read by libgomp when torch is first imported, which no subcommand has done yet; a user's value wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except RecvosError as e:
        print(f"recvos: error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in USER_OS_ERRORS:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"recvos: error: {where}{e.strerror or e}; free disk space or choose a folder you can write to",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("recvos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
