"""Shared by the benchmark scripts: the machine's description and the BENCHMARKS.md section writer."""

from __future__ import annotations

import argparse
import fcntl
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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


@dataclass(frozen=True)
class VariantOption:
    """One option of :func:`add_model_variants`: a list of values, each run in turn (every combination with the
    other options). ``label`` gives the report label's part for a value given; ``target`` says where the value
    goes: "segmenter" (a Segmenter option), "online" (``open_sequence``'s online-learning steps) or "finetune"
    (an option of ``Segmenter.finetune``), under ``key``, converted by ``convert``. ``type`` None: the values are
    "off" and "on". ``with_online``: only combined with online-learning steps."""

    flag: str
    help: str
    label: Callable[[Any], str]
    target: str
    key: str
    type: Callable[[str], Any] | None = None
    convert: Callable[[Any], Any] = lambda v: v
    with_online: bool = False

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


def _on(value: str) -> bool:
    return value == "on"


#: the options of :func:`add_model_variants`, in the order of the combinations and of the labels
VARIANT_OPTIONS = [
    VariantOption(
        "--memory",
        "run each model with each memory size (frames)",
        lambda k: f", memory {k}" if k else "",
        "segmenter",
        "memory",
        int,
    ),
    VariantOption(
        "--small-object-size",
        "run each model with each small_object_size (0: off; default: the Segmenter's)",
        lambda z: f", small_object_size {z or 'off'}",
        "segmenter",
        "small_object_size",
        int,
    ),
    VariantOption(
        "--online-steps",
        "run each model with each number of online-learning steps (0: none, the default)",
        lambda n: f", online learning {n} steps" if n else "",
        "online",
        "online_steps",
        int,
    ),
    VariantOption(
        "--online-blend",
        "with --online-steps: each blend of the fine-tuned weights with the original ones (finetune's blend)",
        lambda a: f", blend {a:g}",
        "finetune",
        "blend",
        float,
        with_online=True,
    ),
    VariantOption(
        "--online-backbone",
        "with --online-steps: fine-tune the backbone too, off and/or on (finetune's train_backbone; default: off)",
        lambda b: f", backbone trained {b}",
        "finetune",
        "train_backbone",
        convert=_on,
        with_online=True,
    ),
    VariantOption(
        "--flip",
        "run each model without and/or with test-time flip (the Segmenter's flip; default: off)",
        lambda f: f", flip {f}",
        "segmenter",
        "flip",
        convert=_on,
    ),
    VariantOption(
        "--mask-threshold",
        "run each model with each mask_threshold (the Segmenter's; default: its 0.5)",
        lambda th: f", mask_threshold {th:g}",
        "segmenter",
        "mask_threshold",
        float,
    ),
]


def add_model_variants(ap: argparse.ArgumentParser) -> None:
    """--models and the options of :data:`VARIANT_OPTIONS` (memory, small_object_size, online-learning steps,
    blend and backbone, flip, mask_threshold): each model is run with every combination of their values
    (:func:`model_variants`)."""
    ap.add_argument("--models", nargs="+", default=["default"], help="checkpoints, or 'default' (shipped)")
    for opt in VARIANT_OPTIONS:
        kind = {"type": opt.type} if opt.type is not None else {"choices": ["off", "on"]}
        ap.add_argument(opt.flag, nargs="*", default=[], help=opt.help, **kind)


def model_variants(
    args: argparse.Namespace,
) -> list[tuple[str, str | None, dict[str, Any], dict[str, Any]]]:
    """(label, model for load_model (None: the shipped default), its Segmenter options, its options for
    ``open_sequence``: online learning) for every combination of the options of :func:`add_model_variants`."""

    steps = next(i for i, o in enumerate(VARIANT_OPTIONS) if o.target == "online")

    def combinations(i: int, chosen: list[Any]) -> Iterator[list[Any]]:
        """The values of options i.. after ``chosen`` (None: not given), in order."""
        if i == len(VARIANT_OPTIONS):
            yield chosen
            return
        opt = VARIANT_OPTIONS[i]
        given = getattr(args, opt.dest) or [None]
        for value in given if not opt.with_online or chosen[steps] else [None]:
            yield from combinations(i + 1, [*chosen, value])

    out = []
    for m in args.models:
        for values in combinations(0, []):
            label = f"`{m}`"
            options: dict[str, dict[str, Any]] = {"segmenter": {}, "online": {}, "finetune": {}}
            for opt, v in zip(VARIANT_OPTIONS, values, strict=True):
                if v is None or (opt.target == "online" and not v):
                    continue
                label += opt.label(v)
                options[opt.target][opt.key] = opt.convert(v)
            online = options["online"]
            if options["finetune"]:
                online["finetune_options"] = options["finetune"]
            out.append((label, None if m == "default" else m, options["segmenter"], online))
    return out


def variant_options(args: argparse.Namespace) -> str:
    """The --models and :data:`VARIANT_OPTIONS` part of a report's command line."""
    return f"--models {' '.join(args.models)}" + "".join(
        f" {opt.flag} {' '.join(map(str, values))}"
        for opt in VARIANT_OPTIONS
        if (values := getattr(args, opt.dest))
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
