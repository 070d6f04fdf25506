"""``recvos predict``: segment every sequence of a dataset into a results folder (or a YouTube-VOS zip)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from recvos.cli.options import (
    add_model_options,
    add_online_steps_option,
    add_zero_shot_options,
    check_model_options,
    sequence_names,
)

if TYPE_CHECKING:
    from recvos.distributed import DistInfo

EXAMPLES = """examples:
  recvos predict --dataset davis2016 --root data/davis2016 --split val -o results/
  recvos predict --dataset davis2017 --root data/davis2017 -o results/ --sequences bike-packing,dogs-jump
  recvos predict --dataset youtube-vos --root data/ytvos --format youtube-vos-zip -o sub/ --shard 0/4
  recvos predict --dataset davis2016 --root data/davis2016 -o results/ --resume   # after an interruption
  torchrun --nproc_per_node=4 -m recvos predict --dataset davis2017 --root data/davis2017 -o results/ \\
      --device cuda                                 # 4 processes (one GPU each) share the sequences
  torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=node0 --master_port=29500 \\
      -m recvos predict --dataset youtube-vos --root /shared/ytvos --format youtube-vos-zip -o /shared/sub \\
      --device cuda                                 # on each machine (--node_rank=1 on the second)"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment a dataset into a results folder",
        description=(
            "Write RESULTS/<seq>/<frame>.png at the annotation resolution, using each object's first annotated "
            "mask only (the layout recvos evaluate and the DAVIS toolkit read). The dataset, the options and "
            "the results folder are checked before the model is loaded."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--dataset",
        required=True,
        choices=["davis2016", "davis2017", "youtube-vos", "folder"],
        help="layout of --root (folder: ROOT/JPEGImages/<seq>/ and ROOT/Annotations/<seq>/)",
    )
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", default=None, help="split (default: the dataset's validation split)")
    p.add_argument("-o", "--output", required=True, metavar="RESULTS", help="results folder")
    add_model_options(p)
    add_zero_shot_options(p)
    p.add_argument("--zero-shot", action="store_true", help="unsupervised: no masks, discover objects")
    add_online_steps_option(p)
    p.add_argument(
        "--shard",
        default=None,
        metavar="i/n",
        help="run the i-th (0-based) of n interleaved shards (under torchrun the ranks split that shard)",
    )
    p.add_argument(
        "--sequences",
        nargs="+",
        default=None,
        metavar="SEQ",
        help="only these sequences, separated by spaces or commas",
    )
    p.add_argument(
        "--format",
        default="davis",
        choices=["davis", "youtube-vos-zip"],
        dest="fmt",
        help="davis: RESULTS/<seq>/<frame>.png; youtube-vos-zip: the annotated frames in "
        "RESULTS/Annotations, zipped into RESULTS/submission.zip (default: davis)",
    )
    p.add_argument(
        "--zip-only",
        action="store_true",
        help="only zip RESULTS/Annotations into RESULTS/submission.zip (after sharded runs)",
    )
    p.add_argument(
        "--convert-masks",
        action="store_true",
        help="accept RGB colour annotations (one id per colour) and anti-aliased binary ones (threshold 128)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing results of these sequences")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run: skip sequences with every mask written, redo the others",
    )
    p.add_argument(
        "--rank-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="under torchrun: rank 0 stops waiting for a rank that has not finished a sequence for this long, "
        "and reports its sequences missing (default: 1800)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Under torchrun (WORLD_SIZE > 1) the ranks split the sequences and rank 0 alone speaks; see
    :mod:`recvos.inference.ranks`."""
    import logging

    from recvos.distributed import cleanup_distributed, init_distributed

    info = init_distributed(args.device)
    if not info.is_main:
        logging.getLogger().setLevel(logging.ERROR)
    try:
        return predict(args, info)
    finally:
        cleanup_distributed(info)


def predict(args: argparse.Namespace, info: DistInfo) -> int:
    from tqdm import tqdm

    from recvos.data.datasets import open_dataset
    from recvos.errors import RecvosError
    from recvos.inference.dataset import check_predict_output, parse_shard, predict_dataset, shard_names
    from recvos.inference.outputs import zip_folder
    from recvos.inference.ranks import predict_on_ranks
    from recvos.inference.segmenter import load_model

    if args.zip_only:
        ann = Path(args.output) / "Annotations"
        if not ann.is_dir():
            raise RecvosError(f"{ann}: no results to zip; run recvos predict --format youtube-vos-zip first")
        if info.is_main:
            print(f"wrote {zip_folder(ann, Path(args.output) / 'submission.zip')}")
        return 0
    check_model_options(args)
    if args.online_steps < 0:
        raise RecvosError(f"--online-steps {args.online_steps}: must be 0 (no online learning) or more")
    if not args.rank_timeout > 0:
        raise RecvosError(f"--rank-timeout {args.rank_timeout:g}: must be more than 0 seconds")
    index, count = parse_shard(args.shard)
    dataset = open_dataset(args.dataset, args.root, args.split, convert_masks=args.convert_masks)
    names = list(dataset.names)
    wanted = sequence_names(args.sequences)
    if wanted:
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise RecvosError(
                f"{args.root}: no sequence(s) {', '.join(unknown)} in the {args.split or 'default'} split"
            )
        names = wanted
    names = shard_names(names, index, count)
    check_predict_output(args.output, dataset, names, args.fmt, args.overwrite, args.resume)
    kind = "zero-shot" if args.zero_shot else "one-shot"
    seg = load_model(
        args.model,
        info.device,
        kind=kind,
        threads=args.threads,
        max_size=args.max_size,
        precision=args.precision,
        memory=args.memory,
        small_object_size=args.small_object_size,
        flip=args.flip,
        tracker=args.tracker,
        handoff=args.handoff,
        allow_random=args.random_weights,
    )
    options = dict(
        names=names,
        fmt=args.fmt,
        zero_shot=args.zero_shot,
        online_steps=args.online_steps,
        overwrite=args.overwrite,
        resume=args.resume,
    )
    quiet = args.no_progress or not info.is_main
    with tqdm(total=len(names), unit="seq", desc="predict", disable=quiet) as bar:
        if info.distributed:
            report = predict_on_ranks(
                seg, dataset, args.output, info, timeout=args.rank_timeout, progress=bar, **options
            )
        else:
            report = predict_dataset(seg, dataset, args.output, progress=bar, **options)
    if info.is_main:
        print(
            f"predicted {report.sequences} sequences, {report.frames} frames in {report.seconds:.1f} s "
            f"({report.fps:.2f} frames/s) -> {args.output}"
        )
    return 0
