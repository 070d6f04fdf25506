"""Turn a training checkpoint into shipped weights: a small model-only file plus a manifest entry.

The file holds the factory's checkpoint keys only (``format``, ``model_name``, ``model_config``,
``state_dict``), floating-point tensors stored in fp16 (they are cast back to the model's fp32 on load).
The manifest entry records the architecture, the preset, the data, the commit, the measured metrics and the
file's SHA-256, which :func:`recvos.inference.default.default_checkpoint_path` verifies on every load.

    python -m recvos.training.export runs/default_oneshot/checkpoints/best.pt --kind one-shot \\
        --preset configs/default_oneshot.yaml --data "..." --metrics-json metrics.json
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from recvos.errors import RecvosError
from recvos.inference.default import MANIFEST, WEIGHTS_DIR, read_manifest, sha256_file
from recvos.training.checkpoint import atomic_save

MODEL_KEYS = ("format", "model_name", "model_config", "state_dict")


def export_weights(checkpoint: str | Path, out_file: str | Path, half: bool = True) -> Path:
    """Write the model part of ``checkpoint`` to ``out_file`` (fp16 floats when ``half``); returns the path."""
    checkpoint = Path(checkpoint)
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise RecvosError(f"{checkpoint}: cannot read checkpoint ({type(e).__name__}); pass a recvos checkpoint") from e
    missing = [k for k in MODEL_KEYS if k not in ckpt]
    if missing:
        raise RecvosError(f"{checkpoint}: not a recvos checkpoint (missing {missing})")
    model = {k: ckpt[k] for k in MODEL_KEYS}
    model["model_config"] = dict(model["model_config"], backbone_weights=None)
    if half:
        model["state_dict"] = {
            k: (v.half() if v.is_floating_point() else v) for k, v in model["state_dict"].items()
        }
    out_file = Path(out_file)
    if out_file.suffix == ".gz":  # gzip: about 8% smaller; recvos.models.factory.load_checkpoint reads it
        buf = io.BytesIO()
        torch.save(model, buf)
        tmp = out_file.with_name(out_file.name + ".tmp")
        with gzip.GzipFile(tmp, "wb", compresslevel=9, mtime=0) as f:
            f.write(buf.getvalue())
        os.replace(tmp, out_file)
    else:
        atomic_save(model, out_file)
    return out_file


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def add_to_manifest(entry: dict[str, Any], manifest: Path = MANIFEST) -> None:
    """Insert or replace (by ``kind``) an entry in the manifest, atomically."""
    entries = [e for e in read_manifest(manifest) if e.get("kind") != entry["kind"]]
    entries.append(entry)
    entries.sort(key=lambda e: e.get("kind", ""))
    tmp = manifest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": "recvos-weights/1", "entries": entries}, indent=2) + "\n")
    tmp.replace(manifest)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m recvos.training.export", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--kind", choices=("one-shot", "zero-shot"), required=True)
    ap.add_argument("--name", default=None, help="file name in recvos/weights (default: default_<kind>.pt)")
    ap.add_argument("--preset", required=True)
    ap.add_argument("--data", required=True, help="what the model was trained on")
    ap.add_argument("--metrics-json", default=None, help="a JSON object of measured metrics to record")
    ap.add_argument("--notes", default="")
    ap.add_argument("--fp32", action="store_true", help="keep fp32 tensors")
    args = ap.parse_args(argv)
    name = args.name or f"default_{args.kind.replace('-', '')}.pt.gz"
    path = export_weights(args.checkpoint, WEIGHTS_DIR / name, half=not args.fp32)
    from recvos.models.factory import load_checkpoint

    model = load_checkpoint(path)  # proves the shipped file loads strictly; gives the recorded name/config
    ckpt = {"model_name": model.name, "model_config": model.config}
    metrics = json.loads(Path(args.metrics_json).read_text()) if args.metrics_json else {}
    entry = {
        "name": path.name.split(".")[0], "kind": args.kind, "file": name, "sha256": sha256_file(path),
        "architecture": {"model": ckpt["model_name"], **{k: v for k, v in ckpt["model_config"].items()}},
        "dtype": "float32" if args.fp32 else "float16", "preset": args.preset, "data": args.data,
        "commit": _git_commit(), "metrics": metrics, "notes": args.notes,
        "bytes": path.stat().st_size,
    }
    add_to_manifest(entry)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and its manifest entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())
