"""``recvos evaluate``: DAVIS J&F of predicted masks against ground truth (same numbers as the official toolkit)."""

from __future__ import annotations

import argparse
import sys

# literal copies of recvos.evaluation.scoring.TASKS and recvos.data.datasets.DATASET_KINDS, so that building the
# parser imports no numpy; tests/test_cli_evaluate.py checks they stay equal
TASKS = ("semi-supervised", "unsupervised")
DATASETS = ("davis2016", "davis2017", "youtube-vos", "folder")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="score predicted masks with the DAVIS J&F metrics",
        description=(
            "Score predicted masks (PRED/<seq>/<frame>.png, palette or greyscale ids) against the ground truth "
            "with the DAVIS region (J) and boundary (F) measures. Prints the global table and one row per object."
        ),
        epilog="""examples:
  recvos evaluate --gt data/davis2016 --pred results/ --split val
  recvos evaluate --gt data/davis2017 --pred results/ --sequences bike-packing,dogs-jump --csv r.csv
  recvos evaluate --gt data/davis2017 --pred results/ --task unsupervised --plot plots/""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--gt",
        required=True,
        metavar="ROOT_OR_ANNOTATION_DIR",
        help="a DAVIS root (ImageSets/2016 or 2017 picks the layout) or a folder of <seq>/<frame>.png",
    )
    p.add_argument(
        "--pred", required=True, metavar="RESULTS_DIR", help="folder of <seq>/<frame>.png predictions"
    )
    p.add_argument(
        "--task",
        choices=TASKS,
        default="semi-supervised",
        help="semi-supervised (first/last frames excluded) or unsupervised (Hungarian matching)",
    )
    p.add_argument("--split", default=None, help="split of a dataset root (default: val)")
    p.add_argument(
        "--dataset", choices=DATASETS, default=None, help="dataset layout of --gt (default: auto-detect)"
    )
    p.add_argument(
        "--sequences",
        nargs="+",
        default=None,
        metavar="SEQ",
        help="sequences to evaluate, separated by spaces or commas (default: all)",
    )
    p.add_argument(
        "--csv", default=None, metavar="FILE", help="write the global and per-object metrics as CSV"
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write metrics and per-frame J/F as JSON")
    p.add_argument(
        "--plot", default=None, metavar="DIR", help="save a per-sequence bar chart and J-over-time curves"
    )
    p.add_argument(
        "--workers", type=int, default=None, metavar="N", help="parallel processes (default: CPUs, max 8)"
    )
    p.add_argument(
        "--convert-masks",
        action="store_true",
        help="convert ambiguous masks (RGB colours, anti-aliased grey) instead of rejecting them",
    )
    p.add_argument(
        "--max-proposals",
        type=int,
        default=None,
        metavar="N",
        help="unsupervised: most predicted ids allowed per sequence (default: 20, as DAVIS)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from recvos.errors import RecvosError
    from recvos.evaluation.folders import find_ground_truth
    from recvos.evaluation.protocols import evaluate_sequences
    from recvos.evaluation.report import format_global_table, format_sequence_table, write_outputs

    if args.workers is not None and args.workers < 1:
        raise RecvosError(f"--workers must be at least 1, got {args.workers}")
    specs = find_ground_truth(args.gt, args.split, args.dataset, args.task)
    from recvos.cli.options import sequence_names

    sequences = sequence_names(args.sequences)
    total = len(sequences) if sequences is not None else len(specs)
    options = {} if args.max_proposals is None else {"max_proposals": args.max_proposals}
    with tqdm(total=total, desc="evaluate", unit="seq", disable=None, file=sys.stderr) as bar:
        result = evaluate_sequences(
            specs,
            args.pred,
            args.task,
            sequences=sequences,
            workers=args.workers,
            convert_masks=args.convert_masks,
            on_sequence_done=lambda _name: bar.update(1),
            **options,
        )
    print(format_global_table(result))
    print()
    print(format_sequence_table(result))
    written = write_outputs(result, args.csv, args.json, args.plot)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0
