"""Peak memory while streaming a long video through ``recvos segment``: 5,000 frames vs 100 frames.

Writes two synthetic H.264 mp4s (a 100-frame synthetic clip looped; small resolution) into a temporary
folder, then segments each in a fresh subprocess with :func:`recvos.inference.video.segment_to_folder`
(decode, model, PNG per frame) and reports the process's peak RSS (``ru_maxrss``) at the end, plus the peak
after the first 100 frames of the long run. Constant memory in video length means the two peaks agree.

    .venv/bin/python benchmarks/stream_memory.py --write
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from _common import write_section  # noqa: E402  (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def write_looped_video(path: Path, num_frames: int, size: tuple[int, int], fps: int = 25) -> Path:
    """An mp4 of ``num_frames`` frames: a 100-frame synthetic clip, looped (one clip in memory)."""
    import av

    from recvos.data.masks import write_mask
    from recvos.data.synthetic import synthetic_clip

    clip = synthetic_clip(0, num_frames=100, size=size, num_objects=2)
    write_mask(path.with_suffix(".png"), clip.masks[0])
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = size[1], size[0], "yuv420p"
        s.options = {"crf": "23", "preset": "ultrafast"}
        for t in range(num_frames):
            for pkt in s.encode(av.VideoFrame.from_ndarray(clip.frames[t % 100], format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return path


def torch_version() -> str:
    from importlib.metadata import version

    return version("torch")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def rss_now_mb() -> float:
    """Current resident set size (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(video: Path, model: str, threads: int, flip: bool = False) -> None:
    """Segment ``video`` (first mask next to it) and print a JSON line with the peaks."""
    import torch

    from recvos.inference.segmenter import load_model
    from recvos.inference.video import segment_to_folder

    torch.set_num_threads(threads)
    seg = load_model(model, allow_random=True, flip=flip)  # speed/memory only: random weights are fine
    startup = rss_now_mb()

    class Probe:
        n = 0
        at100 = now100 = float("nan")

        def update(self, k: int = 1) -> None:
            self.n += k
            if self.n == 100:
                self.at100, self.now100 = peak_rss_mb(), rss_now_mb()

    probe = Probe()
    with tempfile.TemporaryDirectory() as tmp:
        rep = segment_to_folder(seg, video, Path(tmp) / "out", mask=video.with_suffix(".png"), progress=probe)
    print(
        json.dumps(
            {
                "frames": rep.frames,
                "seconds": rep.seconds,
                "peak_mb": peak_rss_mb(),
                "peak_at_100_mb": probe.at100,
                "rss_at_100_mb": probe.now100,
                "rss_end_mb": rss_now_mb(),
                "startup_mb": startup,
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 5000])
    p.add_argument("--size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    p.add_argument("--model", default="rvos-st")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--flip", action="store_true", help="segment with the test-time flip (its own section)")
    p.add_argument("--write", action="store_true")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child, args.model, args.threads, args.flip)
        return 0
    t_all = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="recvos_stream_") as tmp:
        for n in args.lengths:
            video = write_looped_video(Path(tmp) / f"stream_{n}.mp4", n, tuple(args.size))
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(video),
                "--model",
                args.model,
                "--threads",
                str(args.threads),
                *(["--flip"] if args.flip else []),
            ]
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            res = json.loads(out.strip().splitlines()[-1])
            rows.append((n, res))
            print(
                f"{n} frames: peak RSS {res['peak_mb']:.1f} MB (after 100 frames {res['peak_at_100_mb']:.1f} MB); "
                f"RSS after loading {res['startup_mb']:.1f}, at frame 100 {res['rss_at_100_mb']:.1f}, at the end "
                f"{res['rss_end_mb']:.1f} MB; {res['frames'] / res['seconds']:.1f} frames/s"
            )
    total = time.perf_counter() - t_all
    if args.write:
        write_report(ROOT / "BENCHMARKS.md", rows, args, total)
    return 0


def write_report(path: Path, rows: list[tuple], args, total: float) -> None:
    from segment_fps import cpu_name  # noqa: PLC0415 - sibling script

    base = rows[0][1]["peak_mb"]
    key = "stream_memory_flip" if args.flip else "stream_memory"
    lines = [
        f"<!-- {key}:start -->",
        "## Streaming memory: peak RSS vs video length" + (", with --flip" if args.flip else ""),
        "",
        f"Command: `.venv/bin/python benchmarks/stream_memory.py {' '.join(sys.argv[1:])}` "
        f"({date.today().isoformat()}, {total:.0f} s in all).",
        f"Machine: {cpu_name()}, {args.threads} thread(s), torch {torch_version()}, Python {platform.python_version()}.",
        "",
        f"Synthetic H.264 mp4s at {args.size[1]}x{args.size[0]} (a 100-frame clip looped), segmented by "
        f"`segment_to_folder` (the code of `recvos segment`: decode, model `{args.model}` (random weights for a "
        "registered name), "
        "PNG per frame) in a fresh process each; peak RSS = `ru_maxrss` of that process.",
        "",
        "| video length (frames) | peak RSS (MB) | peak growth vs shortest (MB) | peak after 100 frames (MB) "
        "| RSS at frame 100 (MB) | RSS at the end (MB) | frames/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, r in rows:
        lines.append(
            f"| {n} | {r['peak_mb']:.1f} | {r['peak_mb'] - base:+.1f} | {r['peak_at_100_mb']:.1f} | "
            f"{r['rss_at_100_mb']:.1f} | {r['rss_end_mb']:.1f} | {r['frames'] / r['seconds']:.1f} |"
        )
    lines.append(f"<!-- {key}:end -->")
    write_section(key, "\n".join(lines), path)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
