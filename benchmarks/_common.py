"""Shared by the benchmark scripts: the machine's description and the BENCHMARKS.md section writer."""

from __future__ import annotations

import fcntl
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery measured figure, with the command that produced it.\n"


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (or what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section ``<!-- name:start -->…<!-- name:end -->`` of BENCHMARKS.md.

    ``body`` may already contain the markers. The read-modify-write holds an exclusive lock on a lock file
    and ends with an atomic rename, so scripts run at the same time do not lose each other's sections.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = body.strip("\n")
    if not body.startswith(start):
        body = f"{start}\n{body}\n{end}"
    with open(path.with_suffix(".md.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = path.read_text() if path.exists() else HEADER
        i, j = text.find(start), text.find(end)
        if i >= 0 and j > i:
            text = text[:i] + body + text[j + len(end) :]
        else:
            text = text.rstrip("\n") + "\n\n" + body + "\n"
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(path)
