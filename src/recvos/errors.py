"""The one exception type for errors a user can cause (bad paths, bad masks, bad config)."""

from __future__ import annotations

import sys
from collections.abc import Callable


class RecvosError(Exception):
    """A user-facing error: the message names the file (or setting) and the fix, on one line.

    The CLI prints it as ``recvos: error: <message>`` and exits with code 2.
    """


def run_command(main: Callable[[], int], prog: str) -> None:
    """Run a module's ``main()`` as a command (``python -m ...``): exit with its return code; a RecvosError is
    printed as ``<prog>: error: <message>`` and exits with code 2, like the ``recvos`` CLI."""
    try:
        code = main()
    except RecvosError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        code = 2
    sys.exit(code)
