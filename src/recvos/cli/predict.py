"""``recvos predict``: segment every sequence of a dataset into a results folder (or a YouTube-VOS zip)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recvos.cli.options import add_model_options


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment a dataset into a results folder",
        description=(
            "Write RESULTS/<seq>/<frame>.png at the annotation resolution, using each object's first annotated "
            "mask only (the layout recvos evaluate and the DAVIS toolkit read)."
        ),
    )
    p.add_argument("--dataset", required=True, choices=["davis2016", "davis2017", "youtube-vos", "folder"])
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default=None, help="split (default: the dataset's validation split)")
    p.add_argument("-o", "--output", required=True, metavar="RESULTS", help="results folder")
    add_model_options(p)
    p.add_argument("--zero-shot", action="store_true", help="unsupervised: no masks, discover objects")
    p.add_argument("--online-steps", type=int, default=0, help="online-learning steps per sequence")
    p.add_argument(
        "--shard", default=None, metavar="i/n", help="run the i-th (0-based) of n interleaved shards"
    )
    p.add_argument("--sequences", nargs="+", default=None, metavar="SEQ", help="only these sequences")
    p.add_argument("--format", default="davis", choices=["davis", "youtube-vos-zip"], dest="fmt")
    p.add_argument(
        "--zip-only",
        action="store_true",
        help="only zip RESULTS/Annotations into RESULTS/submission.zip (after sharded runs)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing results of these sequences")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from recvos.data.datasets import open_dataset
    from recvos.errors import RecvosError
    from recvos.inference.pipelines import parse_shard, predict_dataset, shard_names, zip_folder
    from recvos.inference.segmenter import load_model

    if args.zip_only:
        ann = Path(args.output) / "Annotations"
        if not ann.is_dir():
            raise RecvosError(f"{ann}: no results to zip; run recvos predict --format youtube-vos-zip first")
        print(f"wrote {zip_folder(ann, Path(args.output) / 'submission.zip')}")
        return 0
    index, count = parse_shard(args.shard)
    dataset = open_dataset(args.dataset, args.root, args.split)
    names = list(dataset.names)
    if args.sequences:
        unknown = sorted(set(args.sequences) - set(names))
        if unknown:
            raise RecvosError(
                f"{args.root}: no sequence(s) {', '.join(unknown)} in the {args.split or 'default'} split"
            )
        names = list(args.sequences)
    names = shard_names(names, index, count)
    kind = "zero-shot" if args.zero_shot else "one-shot"
    seg = load_model(args.model, args.device, kind=kind, threads=args.threads, max_size=args.max_size)
    with tqdm(total=len(names), unit="seq", desc="predict", disable=args.no_progress) as bar:
        report = predict_dataset(
            seg,
            dataset,
            args.output,
            names=names,
            fmt=args.fmt,
            zero_shot=args.zero_shot,
            online_steps=args.online_steps,
            overwrite=args.overwrite,
            progress=bar,
        )
    print(
        f"predicted {report.sequences} sequences, {report.frames} frames in {report.seconds:.1f} s "
        f"({report.fps:.2f} frames/s) -> {args.output}"
    )
    return 0
