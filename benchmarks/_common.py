"""Shared by the benchmark scripts: the machine's description and the BENCHMARKS.md section writer."""

from __future__ import annotations

import argparse
import fcntl
import itertools
import platform
from pathlib import Path
from typing import Any

import numpy as np

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


def command_and_machine(script: str, argv: list[str] | None, threads: int) -> tuple[str, str]:
    """The command line of a run of ``benchmarks/<script>`` (``argv``: its arguments, None for sys.argv's)
    and this machine's description, for a BENCHMARKS.md section."""
    import shlex
    import sys

    import torch

    args = shlex.join(argv if argv is not None else sys.argv[1:])
    cmd = f"python benchmarks/{script} {args}".strip()
    machine = (
        f"{cpu_name()}, {threads} threads, torch {torch.__version__}, Python {platform.python_version()}"
    )
    return cmd, machine


def report(
    section: str,
    title: str,
    script: str,
    argv: list[str] | None,
    threads: int,
    about: str,
    table: str,
    write: bool,
) -> None:
    """Print ``table``; with ``write``, make it the BENCHMARKS.md section ``section``: the title (dated), the
    command and machine (:func:`command_and_machine`) followed by ``about``, then the table."""
    from datetime import date

    print(table)
    if write:
        cmd, machine = command_and_machine(script, argv, threads)
        write_section(
            section,
            f"{title} ({date.today().isoformat()})\n\nCommand: `{cmd}` — machine: {machine}{about}\n\n{table}\n",
        )


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


def add_model_variants(ap: argparse.ArgumentParser) -> None:
    """--models, --memory, --small-object-size, --online-steps and --flip: each model is run with each memory
    size, each small_object_size, each number of online-learning steps and flip off/on (:func:`model_variants`)."""
    ap.add_argument("--models", nargs="+", default=["default"], help="checkpoints, or 'default' (shipped)")
    ap.add_argument(
        "--memory", type=int, nargs="*", default=[], help="run each model with each memory size (frames)"
    )
    ap.add_argument(
        "--small-object-size",
        type=int,
        nargs="*",
        default=[],
        help="run each model with each small_object_size (0: off; default: the Segmenter's)",
    )
    ap.add_argument(
        "--online-steps",
        type=int,
        nargs="*",
        default=[],
        help="run each model with each number of online-learning steps (0: none, the default)",
    )
    ap.add_argument(
        "--online-blend",
        type=float,
        nargs="*",
        default=[],
        help="with --online-steps: each blend of the fine-tuned weights with the original ones (finetune's blend)",
    )
    ap.add_argument(
        "--online-backbone",
        nargs="*",
        choices=["off", "on"],
        default=[],
        help="with --online-steps: fine-tune the backbone too, off and/or on (finetune's train_backbone; default: off)",
    )
    ap.add_argument(
        "--mask-threshold",
        type=float,
        nargs="*",
        default=[],
        help="run each model with each mask_threshold (the Segmenter's; default: its 0.5)",
    )
    ap.add_argument(
        "--flip",
        nargs="*",
        choices=["off", "on"],
        default=[],
        help="run each model without and/or with test-time flip (the Segmenter's flip; default: off)",
    )


def model_variants(
    args: argparse.Namespace,
) -> list[tuple[str, str | None, dict[str, Any], dict[str, Any]]]:
    """(label, model for load_model (None: the shipped default), its Segmenter options, its options for
    ``open_sequence``: online learning) for every combination of the options of :func:`add_model_variants`."""
    out = []
    for m in args.models:
        for k in args.memory or [None]:
            for z in args.small_object_size or [None]:
                for n in args.online_steps or [None]:
                    for a, bb, f, th in itertools.product(
                        (args.online_blend or [None]) if n else [None],
                        (getattr(args, "online_backbone", None) or [None]) if n else [None],
                        getattr(args, "flip", None) or [None],
                        getattr(args, "mask_threshold", None) or [None],
                    ):
                        label = (
                            f"`{m}`"
                            + (f", memory {k}" if k else "")
                            + ("" if z is None else f", small_object_size {z or 'off'}")
                            + (f", online learning {n} steps" if n else "")
                            + ("" if a is None else f", blend {a:g}")
                            + ("" if bb is None else f", backbone trained {bb}")
                            + ("" if f is None else f", flip {f}")
                            + ("" if th is None else f", mask_threshold {th:g}")
                        )
                        kw: dict[str, Any] = {"memory": k} | ({} if z is None else {"small_object_size": z})
                        if f is not None:
                            kw["flip"] = f == "on"
                        if th is not None:
                            kw["mask_threshold"] = th
                        online: dict[str, Any] = {} if not n else {"online_steps": n}
                        tune = ({} if a is None else {"blend": a}) | (
                            {} if bb is None else {"train_backbone": bb == "on"}
                        )
                        if tune:
                            online["finetune_options"] = tune
                        out.append((label, None if m == "default" else m, kw, online))
    return out


def variant_options(args: argparse.Namespace) -> str:
    """The --models/--memory/--small-object-size/--online-steps part of a report's command line."""
    return (
        f"--models {' '.join(args.models)}"
        + (f" --memory {' '.join(map(str, args.memory))}" if args.memory else "")
        + (
            f" --small-object-size {' '.join(map(str, args.small_object_size))}"
            if args.small_object_size
            else ""
        )
        + (f" --online-steps {' '.join(map(str, args.online_steps))}" if args.online_steps else "")
        + (f" --online-blend {' '.join(map(str, args.online_blend))}" if args.online_blend else "")
        + (
            f" --online-backbone {' '.join(args.online_backbone)}"
            if getattr(args, "online_backbone", None)
            else ""
        )
        + (f" --flip {' '.join(args.flip)}" if getattr(args, "flip", None) else "")
        + (
            f" --mask-threshold {' '.join(map(str, args.mask_threshold))}"
            if getattr(args, "mask_threshold", None)
            else ""
        )
    )


#: the DAVIS-2016 training videos held out from every training run (model selection, composite checks)
HOLDOUT = ["bmx-bumps", "dance-jump", "drift-turn", "mallard-fly", "stroller"]


def held_out_composites(
    root: str,
    frames: int,
    seed: int,
    donors: tuple[int, ...],
    size: tuple[int, int] = (240, 427),
    **paste: Any,
) -> list[tuple[str, list[str], tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Each held-out video with objects of other held-out videos pasted in: (name, donor names, (frames,
    ids, annotated)) at ``size``, first ``frames`` frames. ``donors``: offsets in :data:`HOLDOUT` of the
    videos whose object is pasted (an offset twice: two copies); ``paste``: options of ``paste_objects``.
    Seeded per video (``seed + i``), so every model sees the same clips."""
    from recvos.data.clips import load_window
    from recvos.data.composite import paste_objects
    from recvos.data.datasets import open_dataset
    from recvos.data.masks import VOID_ID
    from recvos.data.transforms import resize_clip

    videos = {v.name: v for v in open_dataset("davis2016", root, "train") if v.name in HOLDOUT}
    out = []
    for i, name in enumerate(HOLDOUT):
        base = videos[name]
        donor_videos = [videos[HOLDOUT[(i + k) % len(HOLDOUT)]] for k in donors]
        n = min([frames, len(base.frame_paths)] + [len(d.frame_paths) for d in donor_videos])
        windows = []
        for v in [base, *donor_videos]:
            f, ids, ann = load_window(v, list(range(n)))
            f, ids = resize_clip(f, ids, size)
            windows.append((f, ids, ann))
        rng = np.random.default_rng(seed + i)
        f, ids, ann = paste_objects(*windows[0], windows[1:], rng, **paste)
        ids[ids == VOID_ID] = 0
        out.append((name, [d.name for d in donor_videos], (f, ids, ann)))
    return out
