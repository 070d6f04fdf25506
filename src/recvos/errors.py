"""The one exception type for errors a user can cause (bad paths, bad masks, bad config)."""

from __future__ import annotations


class RecvosError(Exception):
    """A user-facing error: the message names the file (or setting) and the fix, on one line.

    The CLI prints it as ``recvos: error: <message>`` and exits with code 2.
    """
