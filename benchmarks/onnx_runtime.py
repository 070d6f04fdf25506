"""PyTorch eager and optimised (fp32, bf16), ONNX Runtime fp32 and int8 (dynamic; static), side by side.

The shipped one-shot default (or ``--model``) is exported once (``recvos.inference.onnx.export_onnx``, for
240x427 frames) and quantised twice: with ``onnxruntime.quantization.quantize_dynamic`` (int8 weights,
activations quantised at run time), and with ``quantize_static`` for the backbone's convolutions only (QDQ
int8, per-channel weights, activation ranges calibrated on the step's inputs over the bear frames of the speed
runs, a training video; the recurrent decoder and the matching stay fp32). PyTorch runs eager, optimised
(``optimize_for_inference``: BatchNorm folded, channels-last, convolutions packed by oneDNN) in fp32 and bf16,
and optimised without the packing (the optimisation before it) in the precision this CPU defaults to. For
each runtime:

- **speed**: ms/frame of the model's own loop (``unroll``: init_state + one step per frame) on the first
  ``--frames`` frames of DAVIS bear (decoded and resized to 240x427 beforehand) with 1 and 3 objects (the
  bear's mask and two boxes), best of two rounds (the runtimes in turn) after a warm-up, at ``--threads`` threads;
- **accuracy**: DAVIS-2016 val with the Segmenter (PromptFeed, same pre/post-processing for every runtime),
  scored at 480p by ``recvos.evaluation`` (official protocol); the per-frame IoU of each runtime's masks
  against ONNX Runtime fp32 (int8 and bf16 count only if their mean IoU against fp32 is at least 0.97).

Usage::

    .venv/bin/python benchmarks/onnx_runtime.py --write
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# as the CLI does (recvos.cli.main), before torch starts OpenMP: spinning threads collapse on a shared CPU
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import cpu_name, write_section  # noqa: E402  (benchmarks/ is on sys.path)

from recvos.models.feed import FirstFrameFeed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SIZE = (240, 427)
STATIC = "ONNX Runtime int8 (static, backbone only)"
#: int8 and bf16 count only if their masks keep this mean IoU against fp32 on DAVIS-2016 val
MIN_IOU = 0.97


def ms_per_frame(
    models: dict[str, tuple[object, torch.dtype]], frames: list[torch.Tensor], first: torch.Tensor
) -> dict[str, float]:
    """ms/frame of each model's ``unroll`` (frames and masks in its dtype) over pre-decoded frames: a 5-frame
    warm-up each, then two timed rounds over all models in turn (so a change of the machine's load hits
    them alike); the best of two."""
    best = dict.fromkeys(models, float("inf"))
    typed = {d: ([f.to(d) for f in frames], first.to(d)) for d in {d for _, d in models.values()}}
    with torch.inference_mode():
        for model, d in models.values():
            for _ in model.unroll(typed[d][0][:5], FirstFrameFeed(typed[d][1])):
                pass
        for _ in range(2):
            for name, (model, d) in models.items():
                t0 = time.perf_counter()
                for _ in model.unroll(typed[d][0], FirstFrameFeed(typed[d][1])):
                    pass
                best[name] = min(best[name], 1000 * (time.perf_counter() - t0) / len(frames))
    return best


def bear_firsts(mask: Path) -> dict[int, torch.Tensor]:
    """The objects of frame 0 at the processing size (240x427), by object count: 1, the bear's mask (``mask``,
    resized); 3, the bear and two boxes (rows 20-100 x columns 20-150, rows 120-220 x columns 250-400)."""
    from recvos.data.masks import read_mask
    from recvos.inference.inputs import resize_binary

    bear = torch.from_numpy(resize_binary(read_mask(mask) > 0, SIZE)).float()
    boxes = torch.zeros(2, *SIZE)
    boxes[0, 20:100, 20:150] = 1
    boxes[1, 120:220, 250:400] = 1
    return {1: bear[None, None], 3: torch.cat([bear[None], boxes])[None]}


def first_ids(masks: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Masks [O, h, w] at the processing size -> an id map (1..O, later objects on top) at ``size``."""
    import cv2

    ids = np.zeros(size, np.int32)
    for i, m in enumerate(masks.numpy() > 0.5, start=1):
        ids[cv2.resize(m.astype(np.uint8), size[::-1], interpolation=cv2.INTER_NEAREST) > 0] = i
    return ids


def segmenter_ms(runners: dict, raw: list[np.ndarray], ids: np.ndarray, rounds: int = 2) -> dict[str, float]:
    """ms/frame of each Segmenter end to end over decoded frames at the video's size (resizing, model,
    upsampling, id maps), objects given on frame 0: a warm-up, then the best of ``rounds`` rounds, in turn."""
    best = dict.fromkeys(runners, float("inf"))
    for rnd in range(rounds + 1):
        for name, seg in runners.items():
            state = seg.init_state(raw if rnd else raw[:5])
            seg.add_mask(state, 0, ids)
            t0 = time.perf_counter()
            n = sum(1 for _ in seg.propagate(state))
            if rnd:
                best[name] = min(best[name], 1000 * (time.perf_counter() - t0) / n)
    return best


def unpacked_segmenter(model, precision: str):
    """A Segmenter propagating with the optimisation of before oneDNN packing (``pack=False``): BatchNorm
    folded, channels-last, eager convolutions. It sets the Segmenter's optimised copy directly (a private
    attribute: a comparison for this benchmark only)."""
    import copy

    from recvos.inference.segmenter import Segmenter

    seg = Segmenter(model, precision=precision)
    seg._fast = copy.deepcopy(model).optimize_for_inference(pack=False).to(seg.dtype)
    return seg


def quantize_pair(src: Path, dst: Path) -> None:
    """Dynamic int8 copies of an exported step graph and its init graph (metadata kept)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from recvos.inference.onnx import init_path

    for a, b in ((src, dst), (init_path(src), init_path(dst))):
        quantize_dynamic(str(a), str(b), weight_type=QuantType.QInt8)


def quantize_backbone_static(src: Path, dst: Path, frames: list[torch.Tensor], first: torch.Tensor) -> int:
    """A static int8 copy of an exported step graph's backbone convolutions (QDQ, per-channel int8 weights,
    uint8 activations with MinMax ranges calibrated on the step's own inputs over ``frames``, objects ``first``);
    the init graph is copied as is (it runs once per video). Returns the convolutions quantised."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from recvos.inference.onnx import OnnxModel, init_path

    def scopes(node) -> str:
        return next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")

    proto = onnx.load(str(src))
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv" and "model.backbone" in scopes(n)]
    model, feeds = OnnxModel(src), []
    run = model._run

    def record(session, inputs):  # the step graph's inputs, as ONNX Runtime receives them
        if session is model._step:
            feeds.append({k: np.ascontiguousarray(v.float().numpy()) for k, v in inputs.items()})
        return run(session, inputs)

    model._run = record
    with torch.inference_mode():
        for _ in model.unroll(frames, FirstFrameFeed(first)):
            pass

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = iter(feeds)

        def get_next(self):
            return next(self.left, None)

    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=convs,
    )
    shutil.copyfile(init_path(src), init_path(dst))
    return len(convs)


def davis_masks(seg, seqs) -> tuple[dict[str, np.ndarray], float]:
    """The Segmenter's id maps [T, H, W] per sequence (objects prompted on frame 0) and ms/frame overall."""
    from recvos.inference.dataset import open_sequence

    preds, frames = {}, 0
    t0 = time.perf_counter()
    for seq in seqs:
        state = open_sequence(seg, seq)
        preds[seq.name] = np.stack([ids for _, _, ids in seg.propagate(state)])
        frames += len(preds[seq.name])
    return preds, 1000 * (time.perf_counter() - t0) / frames


def iou_per_frame(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """IoU of the foreground (any object) of two predictions, per frame (1 where both are empty)."""
    out = []
    for name in a:
        x, y = a[name] > 0, b[name] > 0
        inter = (x & y).reshape(len(x), -1).sum(1)
        union = (x | y).reshape(len(x), -1).sum(1)
        out.append(np.where(union == 0, 1.0, inter / np.maximum(union, 1)))
    return np.concatenate(out)


def main(argv: list[str] | None = None) -> int:
    from recvos.data.datasets import open_dataset
    from recvos.data.frames import open_frames
    from recvos.evaluation.protocols import evaluate_arrays
    from recvos.inference.inputs import frame_to_tensor
    from recvos.inference.onnx import OnnxModel, export_onnx
    from recvos.inference.segmenter import Segmenter, inference_dtype
    from recvos.models.loading import resolve_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped one-shot weights)")
    p.add_argument("--video", type=Path, default=SHARED / "videos" / "cotracker_bear.mp4")
    p.add_argument(
        "--mask", type=Path, default=SHARED / "davis2016" / "Annotations" / "480p" / "bear" / "00000.png"
    )
    p.add_argument("--davis", type=Path, default=SHARED / "davis2016")
    p.add_argument("--frames", type=int, default=40, help="frames of the speed runs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=0, help="only the first N val sequences (smoke)")
    p.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    p.add_argument(
        "--section",
        default="onnx_runtime",
        help="BENCHMARKS.md section to write (another name keeps another machine's figures beside these)",
    )
    args = p.parse_args(argv)
    if not args.video.is_file() or not args.mask.is_file() or not args.davis.is_dir():
        print(f"missing {args.video}, {args.mask} or {args.davis}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    t_all = time.perf_counter()

    model = resolve_model(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="recvos-onnx-bench-"))
    try:
        t0 = time.perf_counter()
        export_onnx(model, tmp / "fp32.onnx", size=SIZE)
        export_s = time.perf_counter() - t0
        quantize_pair(tmp / "fp32.onnx", tmp / "int8.onnx")
        with open_frames(args.video) as src:
            raw = [f for _, f in zip(range(args.frames), src, strict=False)]
        frames = [frame_to_tensor(f, SIZE, torch.device("cpu")) for f in raw]
        firsts = bear_firsts(args.mask)
        static_convs = quantize_backbone_static(tmp / "fp32.onnx", tmp / "int8s.onnx", frames, firsts[1])
        sizes_mb = {k: (tmp / f"{k}.onnx").stat().st_size / 1e6 for k in ("fp32", "int8", "int8s")}
        default = "bf16" if inference_dtype("auto", torch.device("cpu")) == torch.bfloat16 else "fp32"
        mark = {default: " (default here)"}
        runners = {
            "PyTorch eager": Segmenter(model, optimize=False, precision="fp32"),
            f"PyTorch optimised fp32{mark.get('fp32', '')}": Segmenter(model, precision="fp32"),
            f"PyTorch optimised bf16{mark.get('bf16', '')}": Segmenter(model, precision="bf16"),
            f"PyTorch optimised {default}, convolutions not packed (before)": unpacked_segmenter(
                model, default
            ),
            "ONNX Runtime fp32": Segmenter(OnnxModel(tmp / "fp32.onnx", args.threads)),
            "ONNX Runtime int8 (dynamic)": Segmenter(OnnxModel(tmp / "int8.onnx", args.threads)),
            STATIC: Segmenter(OnnxModel(tmp / "int8s.onnx", args.threads)),
        }
        models = {name: (seg._runner(), seg.dtype) for name, seg in runners.items()}
        by_count = {n: ms_per_frame(models, frames, first) for n, first in firsts.items()}
        speed = {name: {n: by_count[n][name] for n in firsts} for name in runners}
        # the same objects through the Segmenter, frames and masks at the video's own size
        id_maps = {n: first_ids(first[0], raw[0].shape[:2]) for n, first in firsts.items()}
        e2e = {n: segmenter_ms(runners, raw, ids) for n, ids in id_maps.items()}
        for name in runners:
            speed[name].update({f"e2e{n}": e2e[n][name] for n in firsts})
        print(speed, file=sys.stderr, flush=True)

        ds = open_dataset("davis2016", args.davis, "val")
        seqs = [ds[i] for i in range(len(ds))][: args.limit or None]
        gts = {s.name: np.stack([s.load_mask(i) for i in range(len(s.frame_paths))]) for s in seqs}
        results = {}
        for name, seg in runners.items():
            preds, ms = davis_masks(seg, seqs)
            j = evaluate_arrays(gts, preds).global_metrics["J-Mean"]
            results[name] = {"preds": preds, "J": j, "ms": ms}
            print(name, f"J {j:.4f}, {ms:.1f} ms/frame end to end", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    reference = results["ONNX Runtime fp32"]["preds"]
    rows = []
    for name, r in results.items():
        ious = iou_per_frame(reference, r["preds"])
        r["iou"] = (float(ious.mean()), float(ious.min()))
        rows.append(
            f"| {name} | {speed[name][1]:.1f} | {speed[name][3]:.1f} | {speed[name]['e2e1']:.1f} | "
            f"{speed[name]['e2e3']:.1f} | {r['ms']:.1f} | {r['J']:.4f} | "
            f"{r['iou'][0]:.4f} / {r['iou'][1]:.3f} |"
        )
    checked = {
        "int8": "ONNX Runtime int8 (dynamic)",
        "static int8": STATIC,
        "bf16": next(n for n in runners if "bf16" in n),
    }
    verdict = " ".join(
        f"{label} keeps a mean IoU of {results[name]['iou'][0]:.4f} against fp32 (threshold {MIN_IOU}): "
        + ("it counts." if results[name]["iou"][0] >= MIN_IOU else "it does **not** count.")
        for label, name in checked.items()
    )
    n_frames = sum(len(v) for v in reference.values())
    table = (
        "| runtime | model loop, 1 object | model loop, 3 objects | end to end, 1 object | end to end, 3 objects | "
        "end to end (DAVIS val) | J-Mean (DAVIS-2016 val) | IoU vs ORT fp32 (mean / min frame) |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    print(table)
    print(verdict)
    if args.write:
        cmd = "python benchmarks/onnx_runtime.py " + " ".join(argv if argv is not None else sys.argv[1:])
        machine = (
            f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads, torch {torch.__version__}, "
            f"onnxruntime {__import__('onnxruntime').__version__}, Python {platform.python_version()}"
        )
        body = (
            f"## ONNX Runtime vs PyTorch ({date.today().isoformat()}"
            + ("" if args.section == "onnx_runtime" else f", {cpu_name()}")
            + ")\n\n"
            f"Command: `{cmd}` — machine: {machine}; load average {load_before:.1f} before the run "
            f"({'the CPU was shared' if load_before > 1.5 else 'a quiet CPU'}), "
            f"{time.perf_counter() - t_all:.0f} s in all.\n\n"
            f"Model: {args.model or 'the shipped one-shot default'} (RVOS-ST, hidden_size "
            f"{model.config.get('hidden_size')}, reference + {model.config.get('memory')}-frame memory), "
            f"exported for {SIZE[1]}x{SIZE[0]} frames in {export_s:.0f} s (files: fp32 {sizes_mb['fp32']:.1f} MB, "
            f"int8 {sizes_mb['int8']:.1f} MB, static int8 {sizes_mb['int8s']:.1f} MB with "
            f"{static_convs} backbone convolutions quantised, step graph). Speed: the model's loop (unroll) over the first "
            f"{len(frames)} frames of bear at {SIZE[1]}x{SIZE[0]}, pre-decoded, best of two rounds taking the runtimes in turn; "
            f"end to end, 1 and 3 objects: the Segmenter over the same frames decoded at the video's "
            f"{raw[0].shape[1]}x{raw[0].shape[0]} (resizing, model, upsampling, id maps at that size), same objects. All ms/frame. "
            f"End to end (DAVIS val) and J: the Segmenter on DAVIS-2016 val ({len(seqs)} sequences, {n_frames} frames, every frame), "
            "480p masks, official protocol (recvos.evaluation). IoU: foreground of each frame against "
            f"ONNX Runtime fp32.\n\n{table}\n\n{verdict}\n"
        )
        write_section(args.section, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
