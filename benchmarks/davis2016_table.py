"""DAVIS-2016 val table: baselines and recvos defaults, evaluated with the official protocol.

Runs, in one process and on the same frames:
- "copy first mask": the frame-0 mask repeated on every frame;
- "DIS flow": OpenCV DIS optical flow (computed on the dataset frames) warping the previous mask;
- recvos one-shot default, without and with online learning; recvos zero-shot default (unsupervised protocol).

Predictions are produced at the annotation resolution (854x480) and scored with recvos.evaluation
(identical numbers to the official DAVIS toolkit). Writes a markdown table to stdout and, with --write,
into BENCHMARKS.md.

    python benchmarks/davis2016_table.py --root ../shared/data/davis2016 --write
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import torch
from _common import command_and_machine, write_section  # noqa: E402  (benchmarks/ is on sys.path)

from recvos.data.datasets import VideoSequence, open_dataset
from recvos.evaluation.protocols import evaluate_arrays
from recvos.inference.segmenter import HANDOFF

Predictor = Callable[[VideoSequence], Iterator[np.ndarray]]
#: the one-shot rows' label suffix for each --flip value
FLIP_LABEL = {"off": "", "on": " + flip"}


def copy_first(seq: VideoSequence) -> Iterator[np.ndarray]:
    first = seq.load_mask(0)
    for _ in range(len(seq.frame_paths)):
        yield first


def dis_flow(seq: VideoSequence) -> Iterator[np.ndarray]:
    """Warp the previous mask with DIS flow from the current frame back to the previous one."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    first = seq.load_mask(0)
    H, W = first.shape
    prev_gray = None
    prev_mask = None
    for i in range(len(seq.frame_paths)):
        frame = seq.load_frame(i)
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        if i == 0:
            prev_mask = cv2.resize(first.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            out = first
        else:
            flow = dis.calc(gray, prev_gray, None)  # for each pixel of frame i: where it was in frame i-1
            gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
            prev_mask = cv2.remap(
                prev_mask,
                gx + flow[..., 0],
                gy + flow[..., 1],
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=0,
            )
            prev_mask = (prev_mask > 0.5).astype(np.float32)
            out = (cv2.resize(prev_mask, (W, H), interpolation=cv2.INTER_LINEAR) > 0.5).astype(np.int32)
        prev_gray = gray
        yield out


def recvos_predictor(
    kind: str,
    online_steps: int = 0,
    model: str | None = None,
    online_precision: str = "auto",
    finetune_options: dict | None = None,
    **options,
) -> Predictor:
    """The user path of ``recvos predict``: the object given on its first annotated frame, then propagated
    (after ``online_steps`` of online learning in ``online_precision``, "auto" being the Segmenter's own, with
    ``finetune_options`` for ``Segmenter.finetune``: lr, blend, train_backbone; None values are left out)."""
    from recvos.inference.dataset import open_sequence
    from recvos.inference.segmenter import inference_dtype, load_model

    seg = load_model(model, kind=kind, **options)
    zero_shot = kind == "zero-shot"
    ol = {k: v for k, v in (finetune_options or {}).items() if v is not None}  # None: finetune's default
    if online_precision != "auto":
        ol["dtype"] = inference_dtype(online_precision, seg.device)

    def run(seq: VideoSequence) -> Iterator[np.ndarray]:
        state = open_sequence(seg, seq, zero_shot=zero_shot, online_steps=online_steps, finetune_options=ol)
        for _, _, ids in seg.propagate(state, zero_shot=zero_shot):
            yield ids

    return run


def run_method(name: str, predict: Predictor, dataset, task: str) -> dict:
    gts, preds = {}, {}
    t0 = time.perf_counter()
    n_frames = 0
    for seq in dataset:
        preds[seq.name] = np.stack(list(predict(seq)))
        n_frames += len(seq.frame_paths)
    elapsed = time.perf_counter() - t0
    for seq in dataset:
        gts[seq.name] = np.stack([seq.load_mask(i) for i in range(len(seq.frame_paths))])
    res = evaluate_arrays(gts, preds, task=task)
    g = res.global_metrics
    per: dict[str, list[float]] = {}
    for o in res.objects:
        per.setdefault(o.sequence, []).append(float(np.mean(o.j)))
    row = {
        "method": name,
        **g,
        "per_sequence": {s: float(np.mean(js)) for s, js in per.items()},
        "s/video": elapsed / len(dataset),
        "ms/frame": 1000 * elapsed / n_frames,
    }
    print(row, file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="../shared/data/davis2016")
    ap.add_argument("--split", default="val")
    ap.add_argument("--methods", default="copy,flow,oneshot,oneshot-ol,zeroshot-alone,zeroshot")
    ap.add_argument(
        "--online-steps", type=int, nargs="+", default=[50], help="oneshot-ol: one row per value (steps)"
    )
    ap.add_argument(
        "--online-precision",
        nargs="+",
        default=["auto"],
        choices=["auto", "fp32", "bf16"],
        help="oneshot-ol: one row per value and step count (auto: the Segmenter's precision, bf16 on a CPU "
        "with native bf16)",
    )
    ap.add_argument(
        "--online-lr",
        type=float,
        nargs="+",
        default=[None],
        help="oneshot-ol: one row per value, step count and precision (default: finetune's learning rate)",
    )
    ap.add_argument(
        "--online-blend",
        type=float,
        nargs="+",
        default=[None],
        help="oneshot-ol: one row per value and the others (default: finetune's blend, 1)",
    )
    ap.add_argument(
        "--online-backbone",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="oneshot-ol: one row per value and the others: fine-tune the backbone too (default: off)",
    )
    ap.add_argument(
        "--per-sequence", action="store_true", help="also a table of J-Mean per sequence and method"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--oneshot-model", default=None, help="checkpoint (default: the shipped one-shot weights)"
    )
    ap.add_argument(
        "--previous-oneshot",
        default=None,
        help="with method 'previous': the one-shot default it replaces (a checkpoint or an exported .pt.gz), as a row",
    )
    ap.add_argument(
        "--previous-label",
        default="previous one-shot default",
        help="with method 'previous': its row's label (default: %(default)s)",
    )
    ap.add_argument(
        "--zeroshot-model", default=None, help="checkpoint (default: the shipped zero-shot weights)"
    )
    ap.add_argument(
        "--tracker",
        default="default",
        help="zeroshot: the one-shot tracker (default: the shipped one-shot weights)",
    )
    ap.add_argument(
        "--handoff", type=int, default=HANDOFF, help=f"zeroshot: hand-off frame (default {HANDOFF})"
    )
    ap.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (recvos rows)")
    ap.add_argument(
        "--memory", type=int, default=None, help="one-shot rows: memory frames (default: each model's own)"
    )
    ap.add_argument(
        "--small-object-size",
        type=int,
        default=None,
        help="one-shot rows: the Segmenter's small_object_size (0: off; default: the Segmenter's)",
    )
    ap.add_argument(
        "--mask-threshold",
        type=float,
        default=None,
        help="one-shot rows: the Segmenter's mask_threshold (default: the Segmenter's, 0.5)",
    )
    ap.add_argument(
        "--sequences",
        default=None,
        help="comma-separated sequences of the split (e.g. held-out train videos)",
    )
    ap.add_argument(
        "--flip",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="one-shot rows (oneshot, oneshot-ol) and the zero-shot default's (its tracker): one row per value, "
        "without and/or with the Segmenter's test-time flip (default: off)",
    )
    ap.add_argument("--limit", type=int, default=0, help="only the first N sequences (smoke)")
    ap.add_argument("--write", action="store_true", help="write the table into BENCHMARKS.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    ds = open_dataset("davis2016", args.root, args.split)
    seqs = [ds[i] for i in range(len(ds))][: args.limit or None]
    if args.sequences:
        seqs = [s for s in seqs if s.name in args.sequences.split(",")]
    run = {"precision": args.precision}
    one = {**run, "memory": args.memory}  # the one-shot rows
    if args.small_object_size is not None:
        one["small_object_size"] = args.small_object_size
    if args.mask_threshold is not None:
        one["mask_threshold"] = args.mask_threshold
    rows = []
    for m in args.methods.split(","):
        if m == "copy":
            rows.append(run_method("copy first mask", copy_first, seqs, "semi-supervised"))
        elif m == "flow":
            rows.append(run_method("DIS optical flow propagation", dis_flow, seqs, "semi-supervised"))
        elif m == "oneshot":
            for flip in args.flip:
                rows.append(
                    run_method(
                        "recvos one-shot default" + FLIP_LABEL[flip],
                        recvos_predictor("one-shot", 0, args.oneshot_model, **one, flip=flip == "on"),
                        seqs,
                        "semi-supervised",
                    )
                )
        elif m == "previous":
            if not args.previous_oneshot:
                ap.error("method 'previous' needs --previous-oneshot PATH")
            rows.append(
                run_method(
                    args.previous_label,
                    recvos_predictor("one-shot", 0, args.previous_oneshot, **one),
                    seqs,
                    "semi-supervised",
                )
            )
        elif m == "oneshot-ol":  # one row per combination of the --online-* values
            for steps, p, lr, a, bb, flip in itertools.product(
                args.online_steps,
                args.online_precision,
                args.online_lr,
                args.online_blend,
                args.online_backbone,
                args.flip,
            ):
                label = (
                    f"{steps} steps"
                    + ("" if p == "auto" else f", {p}")
                    + ("" if lr is None else f", lr {lr:g}")
                    + ("" if a is None else f", blend {a:g}")
                    + (", backbone trained" if bb == "on" else "")
                )
                rows.append(
                    run_method(
                        f"recvos one-shot default + online learning ({label})" + FLIP_LABEL[flip],
                        recvos_predictor(
                            "one-shot",
                            steps,
                            args.oneshot_model,
                            p,
                            {"lr": lr, "blend": a, "train_backbone": bb == "on" or None},
                            **one,
                            flip=flip == "on",
                        ),
                        seqs,
                        "semi-supervised",
                    )
                )
        elif m == "zeroshot":
            for flip in args.flip:  # flip applies to the tracker
                rows.append(
                    run_method(
                        f"recvos zero-shot default: discovers on frames 0-{args.handoff - 1}, the one-shot "
                        f"{'default' if args.tracker == 'default' else 'tracker'} tracks (unsupervised protocol)"
                        + FLIP_LABEL[flip],
                        recvos_predictor(
                            "zero-shot",
                            0,
                            args.zeroshot_model,
                            tracker=args.tracker,
                            handoff=args.handoff,
                            flip=flip == "on",
                            **run,
                        ),
                        seqs,
                        "unsupervised",
                    )
                )
        elif m == "zeroshot-alone":
            rows.append(
                run_method(
                    "recvos zero-shot model throughout (`--tracker none`; the zero-shot default before)",
                    recvos_predictor("zero-shot", 0, args.zeroshot_model, tracker=None, **run),
                    seqs,
                    "unsupervised",
                )
            )
        else:
            ap.error(f"unknown method {m!r}")
    header = "| method | J-Mean | J-Recall | J-Decay | F-Mean | J&F | s/video | ms/frame |\n|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['method']} | {r['J-Mean']:.3f} | {r['J-Recall']:.3f} | {r['J-Decay']:.3f} | {r['F-Mean']:.3f} | "
        f"{r['J&F-Mean']:.3f} | {r['s/video']:.2f} | {r['ms/frame']:.1f} |\n"
        for r in rows
    )
    table = header + body
    if args.per_sequence:
        names = [s.name for s in seqs]
        table += (
            "\nJ-Mean per sequence:\n\n| sequence | "
            + " | ".join(r["method"] for r in rows)
            + " |\n|---|"
            + "---|" * len(rows)
            + "\n"
            + "".join(
                f"| {n} | "
                + " | ".join(f"{r['per_sequence'].get(n, float('nan')):.3f}" for r in rows)
                + " |\n"
                for n in names
            )
        )
    print(table)
    if args.write:
        cmd, machine = command_and_machine("davis2016_table.py", argv, args.threads)
        section = (
            f"## DAVIS-2016 val ({len(seqs)} sequences), official protocol on 480p masks\n\n"
            f"Command: `{cmd}` — machine: {machine}.\n\n{table}"
        )
        write_section("davis2016_table", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
