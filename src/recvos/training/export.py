"""Turn a training checkpoint into shipped weights: a small model-only file plus a manifest entry.

The file holds the checkpoint's model keys only (``format``, ``model_name``, ``model_config``,
``state_dict``), floating-point tensors stored in fp16 (cast back to the model's fp32 on load), gzip
compressed. The manifest entry records the architecture, the preset, the data, the commit, the measured
metrics and the file's SHA-256, which :func:`recvos.models.loading.default_checkpoint_path` verifies on
every load. It writes into ``--weights-dir`` (default: ``src/recvos/weights`` of the checkout you run it
from), never into an installed package::

    python -m recvos.training.export runs/default_oneshot/checkpoints/best.pt --kind one-shot \\
        --preset configs/default_oneshot.yaml --data "..." --metrics-json metrics.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from recvos.errors import RecvosError, run_command
from recvos.models.loading import KINDS, add_to_manifest, export_weights, load_checkpoint, sha256_file


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recvos.training.export", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--kind", choices=KINDS, required=True)
    ap.add_argument(
        "--weights-dir",
        default="src/recvos/weights",
        help="folder holding manifest.json and the weight files (default: %(default)s)",
    )
    ap.add_argument(
        "--name", default=None, help="file name in the weights folder (default: default_<kind>.pt.gz)"
    )
    ap.add_argument("--preset", required=True)
    ap.add_argument("--data", required=True, help="what the model was trained on")
    ap.add_argument("--metrics-json", default=None, help="a JSON object of measured metrics to record")
    ap.add_argument("--notes", default="")
    ap.add_argument("--fp32", action="store_true", help="keep fp32 tensors")
    ap.add_argument(
        "--memory",
        type=int,
        default=None,
        help="frames the exported model's matching memory holds when it runs (default: as trained)",
    )
    args = ap.parse_args(argv)
    folder = Path(args.weights_dir)
    if not folder.is_dir():
        raise RecvosError(
            f"{folder}: weights folder not found; run from the repository root or pass --weights-dir"
        )
    name = args.name or f"default_{args.kind.replace('-', '')}.pt.gz"
    path = export_weights(args.checkpoint, folder / name, half=not args.fp32, memory=args.memory)
    model = load_checkpoint(path)  # proves the shipped file loads strictly; gives the recorded name/config
    metrics = json.loads(Path(args.metrics_json).read_text()) if args.metrics_json else {}
    entry = {
        "name": path.name.split(".")[0],
        "kind": args.kind,
        "file": name,
        "sha256": sha256_file(path),
        "architecture": {"model": model.name, **model.config},
        "dtype": "float32" if args.fp32 else "float16",
        "preset": args.preset,
        "data": args.data,
        "commit": _git_commit(),
        "metrics": metrics,
        "notes": args.notes,
        "bytes": path.stat().st_size,
    }
    add_to_manifest(entry, folder / "manifest.json")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and its manifest entry")
    return 0


if __name__ == "__main__":
    run_command(main, "export")
