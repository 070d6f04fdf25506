"""End-to-end speed of the one-shot default's architecture with a larger backbone (EfficientNet-Lite0/1/2).

An input to the Lite2 decision (BENCHMARKS.md, "A larger backbone"): a larger backbone can only replace the
default if it still meets the speed targets. Each row is the shipped one-shot default's configuration (its
options from the shipped weights) with another backbone, built with random weights (speed does not depend on
them); the shipped model itself is a reference row (trained weights, Lite0), to show that random weights time
the same. Each runs through the Segmenter end to end (resizing, model, upsampling, id maps) over the first
``--frames`` frames of the bear video at its 854x480, objects given on frame 0 as in ``onnx_runtime.py``'s
end-to-end rows (``bear_firsts``, ``first_ids`` and ``segmenter_ms``): 1 object (the bear) and 3 (the bear and
two boxes). After a warm-up pass of each, ``--rounds`` rounds take the models in turn (so a change of the
machine's load hits them alike); a row gives each model's best pass, and its ratio to the random-weight Lite0
row of the same run.

With ``--local-radius R`` each backbone also gets a row with the local f8 matching (``local_radius=R``,
``local_dim`` 32; BENCHMARKS.md, "Local f8 matching"), and with ``--value-dim V`` a row with the learned memory
values (``value_dim=V``; "Learned memory values"); each option is written to its own section.

Usage::

    .venv/bin/python benchmarks/backbone_speed.py --write
    .venv/bin/python benchmarks/backbone_speed.py --local-radius 3 --backbones efficientnet_lite0,efficientnet_lite2 --write
    .venv/bin/python benchmarks/backbone_speed.py --value-dim 16 --backbones efficientnet_lite0,efficientnet_lite2 --write
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch starts OpenMP

import torch  # noqa: E402
from _common import report  # noqa: E402  (benchmarks/ is on sys.path)
from onnx_runtime import bear_firsts, first_ids, segmenter_ms  # noqa: E402

from recvos.data.frames import open_frames  # noqa: E402
from recvos.inference.segmenter import Segmenter  # noqa: E402
from recvos.models.factory import build_model  # noqa: E402
from recvos.models.loading import resolve_model  # noqa: E402
from recvos.models.state_dicts import count_parameters  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
BACKBONES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--backbones", default=",".join(BACKBONES), help="comma-separated; the first is the reference"
    )
    p.add_argument(
        "--local-radius", type=int, default=0, help="also time each backbone with local f8 matching"
    )
    p.add_argument(
        "--value-dim", type=int, default=0, help="also time each backbone with learned memory values"
    )
    p.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    shipped = resolve_model(None)
    options = dict(shipped.config)
    models = {"shipped one-shot default (trained weights, Lite0)": shipped}
    backbones = args.backbones.split(",")
    variants = [({}, "")]
    if args.local_radius:
        variants.append(
            (
                {"local_radius": args.local_radius, "local_dim": 32},
                f" + local f8 matching r={args.local_radius}",
            )
        )
    if args.value_dim:
        variants.append(({"value_dim": args.value_dim}, f" + learned memory values V={args.value_dim}"))
    for backbone in backbones:
        for extra, label in variants:
            torch.manual_seed(0)
            models[f"{backbone}{label}, random weights"] = build_model(
                "rvos-st", **{**options, "variant": "ST", "backbone": backbone, **extra}
            ).eval()
    runners = {name: Segmenter(m) for name, m in models.items()}
    precision = str(next(iter(runners.values())).dtype).removeprefix("torch.")

    with open_frames(SHARED / "videos" / "cotracker_bear.mp4") as src:
        raw = [f for _, f in zip(range(args.frames), src, strict=False)]
    mask = SHARED / "davis2016" / "Annotations" / "480p" / "bear" / "00000.png"
    id_maps = {n: first_ids(first[0], raw[0].shape[:2]) for n, first in bear_firsts(mask).items()}

    by_count = {n: segmenter_ms(runners, raw, ids, args.rounds) for n, ids in id_maps.items()}
    best = {(name, n): ms[name] for n, ms in by_count.items() for name in runners}
    print(best, file=sys.stderr, flush=True)

    ref = f"{backbones[0]}, random weights"
    table = (
        "| model | parameters (M), all / backbone | ms/frame, 1 object | ms/frame, 3 objects "
        "| ratio to the first random-weight row, 1 / 3 objects |\n|---|---|---|---|---|\n"
        + "\n".join(
            f"| {name} | {count_parameters(m) / 1e6:.2f} / {count_parameters(m.backbone) / 1e6:.2f} | {best[name, 1]:.1f} "
            f"| {best[name, 3]:.1f} | {best[name, 1] / best[ref, 1]:.2f} / {best[name, 3] / best[ref, 3]:.2f} |"
            for name, m in models.items()
        )
    )
    about = (
        f", {precision} (the precision `auto` picks here). The one-shot default's configuration with each "
        f"backbone, end to end (Segmenter) on the first {args.frames} frames of bear at 854x480; each figure "
        f"the best of {args.rounds} passes, the models in turn, after a warm-up."
    )
    if args.local_radius or args.value_dim:
        section = (
            "backbone_speed" + ("_local" if args.local_radius else "") + ("_values" if args.value_dim else "")
        )
        names = ["Local f8 matching"] * bool(args.local_radius) + ["Learned memory values"] * bool(
            args.value_dim
        )
        title = f"### {' and '.join(names)}: {'its' if len(names) == 1 else 'their'} cost end to end"
    else:
        section = "backbone_speed"
        title = "### Backbone speed: the one-shot default with EfficientNet-Lite0, Lite1, Lite2"
    report(section, title, "backbone_speed.py", argv, args.threads, about, table, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
