"""``recvos models``: print the model registry and the backbones (parameters, local ImageNet weights)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "models",
        help="list the shipped weights, models and backbones",
        description="List the registered models (with parameter counts for a backbone) and the backbones "
        "(whether their ImageNet weights are available on this machine; nothing is downloaded).",
    )
    p.add_argument(
        "--backbone", default=None, help="count parameters with this backbone (default: each model's)"
    )
    p.set_defaults(func=run)
    return p


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def shipped_rows() -> list[list[str]]:
    """One row per shipped weights file of the manifest (what ``--model`` uses when it is left out)."""
    from recvos.models.loading import MANIFEST, read_manifest

    rows = [["shipped weights", "kind", "architecture", "holdout J&F", "file"]]
    for e in read_manifest():
        arch = e.get("architecture", {}) if isinstance(e.get("architecture"), dict) else {}
        jf = e.get("metrics", {}).get("holdout_jf") if isinstance(e.get("metrics"), dict) else None
        rows.append(
            [
                str(e.get("name", "?")),
                str(e.get("kind", "?")),
                f"{arch.get('model', '?')} / {arch.get('backbone', '?')}"
                + (f" / width {arch['hidden_size']}" if arch.get("hidden_size") else ""),
                f"{jf:.3f}" if isinstance(jf, (int, float)) else "-",
                str(MANIFEST.parent / str(e.get("file", "?"))),
            ]
        )
    return rows


def run(args: argparse.Namespace) -> int:
    from recvos.models.backbones import backbone_info, list_backbones
    from recvos.models.factory import list_models

    shipped = shipped_rows()
    if len(shipped) > 1:
        print(_table(shipped))
        print(
            "(used when --model is left out: the one-shot default, or the zero-shot one with --zero-shot)\n"
        )
    else:
        print("no shipped weights in this installation; pass --model path/to/checkpoint.pt\n")

    rows = [["model (untrained)", "backbone", "params", "modes", "imagenet weights", "description"]]
    for m in list_models(backbone=args.backbone):
        rows.append(
            [
                m.name,
                m.backbone,
                f"{m.num_params / 1e6:.2f}M",
                ",".join(m.modes),
                "yes" if m.pretrained_available else "no",
                m.description,
            ]
        )
    print(_table(rows))
    print()
    rows = [["backbone", "channels (f4,f8,f16,f32)", "imagenet weights", "file"]]
    for name in list_backbones():
        info = backbone_info(name)
        rows.append(
            [
                name,
                ",".join(map(str, info.channels)),
                "yes" if info.imagenet_available else "no",
                info.weights_path,
            ]
        )
    print(_table(rows))
    print(
        "\nBuild with recvos.build_model(name, backbone=..., backbone_weights=None|'imagenet'|PATH); "
        "torchvision weights are read from the torch hub cache only (never downloaded). A model name runs "
        "untrained (random weights) only with --random-weights."
    )
    return 0
