"""The ``recvos`` command: one subcommand per module in this package, each only parses and calls the library."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from recvos.errors import RecvosError

#: subcommand -> module in recvos.cli with ``add_parser(subparsers)`` and ``run(args) -> int``
SUBCOMMANDS = {
    "segment": "recvos.cli.segment",
    "predict": "recvos.cli.predict",
    "evaluate": "recvos.cli.evaluate",
    "train": "recvos.cli.train",
    "models": "recvos.cli.models",
    "app": "recvos.cli.app",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recvos", description="Video object segmentation with recurrent networks."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


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
        print(f"recvos: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recvos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
