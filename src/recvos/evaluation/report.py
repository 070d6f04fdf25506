"""Reports of an :class:`~recvos.evaluation.results.EvalResult`: text tables, CSV, JSON and plots.

Files are written atomically and together (:func:`write_outputs` renders everything to temporary files
first, then renames them, with :func:`recvos.fileio.atomic_path`), so a failure leaves no partial output. Plots use matplotlib's object API
with the Agg canvas, imported on first use; the global pyplot backend is left alone.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recvos.evaluation.results import METRIC_KEYS, EvalResult
from recvos.fileio import atomic_path

__all__ = [
    "format_global_table",
    "format_sequence_table",
    "plot_results",
    "to_csv",
    "to_json",
    "write_outputs",
]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _fmt(x: float, decimals: int) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{decimals}f}"


def format_global_table(result: EvalResult, decimals: int = 6) -> str:
    """The global metrics (J&F-Mean, J-Mean/Recall/Decay, F-Mean/Recall/Decay) as an aligned text table."""
    g = result.global_metrics
    return _table(["Task", *METRIC_KEYS], [[result.task, *(_fmt(g[k], decimals) for k in METRIC_KEYS)]])


def format_sequence_table(result: EvalResult, decimals: int = 3) -> str:
    """One row per object (``<sequence>_<id>``, evaluated frames, the seven metrics) as a text table."""
    rows = [
        [r["Sequence"], str(r["frames"]), *(_fmt(r[k], decimals) for k in METRIC_KEYS)]
        for r in result.per_sequence
    ]
    return _table(["Sequence", "Frames", *METRIC_KEYS], rows)


def to_csv(result: EvalResult) -> str:
    """CSV text: a first row ``Global`` with the global metrics, then one row per object."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Sequence", "sequence", "object", "frames", *METRIC_KEYS])
    g = result.global_metrics
    w.writerow(
        [
            "Global",
            "",
            "",
            sum(len(o.frames) for o in result.objects),
            *(repr(float(g[k])) for k in METRIC_KEYS),
        ]
    )
    for r in result.per_sequence:
        w.writerow(
            [
                r["Sequence"],
                r["sequence"],
                r["object"],
                r["frames"],
                *(repr(float(r[k])) for k in METRIC_KEYS),
            ]
        )
    return buf.getvalue()


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def to_json(result: EvalResult) -> str:
    """JSON text: task, global metrics, and per object its statistics and per-frame J and F."""
    doc = {
        "task": result.task,
        "global": {k: _num(v) for k, v in result.global_metrics.items()},
        "objects": [
            {
                "sequence": o.sequence,
                "object": o.object_id,
                "pred_id": o.pred_id,
                **{k: _num(v) for k, v in o.stats().items()},
                "frames": list(o.frames),
                "J": [float(x) for x in o.j],
                "F": [float(x) for x in o.f],
            }
            for o in result.objects
        ],
    }
    return json.dumps(doc, indent=1)


def _figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _bar_chart(result: EvalResult, fh) -> None:
    rows = result.per_sequence
    n = len(rows)
    fig = _figure((max(6.0, 0.35 * n + 2), 4.5))
    ax = fig.subplots()
    xs = list(range(n))
    ax.bar([x - 0.2 for x in xs], [r["J-Mean"] for r in rows], width=0.4, label="J-Mean")
    ax.bar([x + 0.2 for x in xs], [r["F-Mean"] for r in rows], width=0.4, label="F-Mean")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["Sequence"] for r in rows], rotation=90, fontsize=7)
    ax.set_ylim(0, 1)
    g = result.global_metrics
    ax.set_title(f"{result.task}: J&F {g['J&F-Mean']:.3f}  J {g['J-Mean']:.3f}  F {g['F-Mean']:.3f}")
    ax.axhline(g["J-Mean"], color="C0", lw=0.8, ls="--")
    ax.axhline(g["F-Mean"], color="C1", lw=0.8, ls="--")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(fh, format="png")


def _j_curves(result: EvalResult, fh) -> None:
    seqs = result.sequences
    cols = min(5, max(1, len(seqs)))
    nrows = math.ceil(len(seqs) / cols)
    fig = _figure((3.2 * cols, 2.4 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.ravel()[len(seqs) :]:
        ax.set_visible(False)
    by_seq: dict[str, list] = {s: [] for s in seqs}
    for o in result.objects:
        by_seq[o.sequence].append(o)
    for ax, s in zip(axes.ravel()[: len(seqs)], seqs, strict=True):
        for o in by_seq[s]:
            x = [int(f) if f.isdigit() else i for i, f in enumerate(o.frames)]
            ax.plot(x, o.j, lw=1, label=f"obj {o.object_id}")
        ax.set_ylim(0, 1.02)
        ax.set_title(s, fontsize=8)
        ax.tick_params(labelsize=6)
        if len(by_seq[s]) > 1:
            ax.legend(fontsize=5, loc="lower left")
    fig.suptitle(f"J per frame ({result.task})")
    fig.tight_layout()
    fig.savefig(fh, format="png")


def j_over_length(result: EvalResult, bins: int = 10) -> np.ndarray:
    """J-Mean over normalised video length (S2S, Fig. 3): each object's evaluated frames are split into
    ``bins`` equal parts of its sequence; float [bins], the mean over objects of each part's mean J (nan for
    a part no object reaches)."""
    sums, counts = np.zeros(bins), np.zeros(bins)
    for o in result.objects:
        n = len(o.j)
        for k, part in enumerate(np.array_split(np.asarray(o.j, dtype=np.float64), bins)):
            if n and part.size:
                sums[k] += part.mean()
                counts[k] += 1
    with np.errstate(invalid="ignore"):
        return sums / counts


def jf_by_object_count(result: EvalResult) -> list[tuple[int, int, float, float]]:
    """J-Mean and F-Mean by the number of objects of the sequence (RVOS, Table 3): rows (objects per
    sequence, objects, J-Mean, F-Mean), averaged over the objects of those sequences."""
    per_seq: dict[str, list] = {}
    for o in result.objects:
        per_seq.setdefault(o.sequence, []).append(o)
    groups: dict[int, list] = {}
    for objs in per_seq.values():
        groups.setdefault(len(objs), []).extend(objs)
    rows = []
    for k in sorted(groups):
        objs = groups[k]
        rows.append(
            (
                k,
                len(objs),
                float(np.mean([np.mean(o.j) for o in objs])),
                float(np.mean([np.mean(o.f) for o in objs])),
            )
        )
    return rows


def _length_plot(result: EvalResult, fh) -> None:
    curve = j_over_length(result)
    fig = _figure((5.0, 3.5))
    ax = fig.subplots()
    x = (np.arange(len(curve)) + 0.5) / len(curve)
    ax.plot(x, curve, marker="o")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("normalised position in the video")
    ax.set_ylabel("J-Mean")
    ax.set_title(f"J over video length ({result.task})")
    fig.tight_layout()
    fig.savefig(fh, format="png")


def _objects_plot(result: EvalResult, fh) -> None:
    rows = jf_by_object_count(result)
    fig = _figure((5.0, 3.5))
    ax = fig.subplots()
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r[2] for r in rows], width=0.4, label="J-Mean")
    ax.bar(xs + 0.2, [r[3] for r in rows], width=0.4, label="F-Mean")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{r[0]} ({r[1]} obj.)" for r in rows])
    ax.set_xlabel("objects in the sequence")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower left")
    ax.set_title(f"J and F by number of objects ({result.task})")
    fig.tight_layout()
    fig.savefig(fh, format="png")


def plot_results(result: EvalResult, out_dir: str | os.PathLike) -> list[Path]:
    """Save ``per_sequence.png`` (J-Mean and F-Mean bars per object), ``j_over_time.png``,
    ``j_over_length.png`` (S2S Fig. 3) and ``by_object_count.png`` (RVOS Table 3) in ``out_dir``."""
    return write_outputs(result, plot_dir=Path(out_dir))


def _write_together(targets: list[tuple[Path, Callable]]) -> list[Path]:
    """Render every (path, writer(fh)) to a temp file beside its path; only when all succeeded, rename them
    all into place. On an error every temp file is removed and no target changes."""
    with contextlib.ExitStack() as stack:
        for path, writer in targets:
            tmp = stack.enter_context(atomic_path(path))
            with open(tmp, "wb") as fh:
                writer(fh)
    return [p for p, _ in targets]


def write_outputs(
    result: EvalResult,
    csv_path: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    plot_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Write the requested CSV, JSON and plots (all rendered first, then renamed into place); the paths."""
    targets: list[tuple[Path, Callable]] = []
    if csv_path is not None:
        text = to_csv(result).encode()
        targets.append((Path(csv_path), lambda fh, t=text: fh.write(t)))
    if json_path is not None:
        text = to_json(result).encode()
        targets.append((Path(json_path), lambda fh, t=text: fh.write(t)))
    if plot_dir is not None:
        d = Path(plot_dir)
        targets.append((d / "per_sequence.png", lambda fh: _bar_chart(result, fh)))
        targets.append((d / "j_over_time.png", lambda fh: _j_curves(result, fh)))
        targets.append((d / "j_over_length.png", lambda fh: _length_plot(result, fh)))
        targets.append((d / "by_object_count.png", lambda fh: _objects_plot(result, fh)))
    return _write_together(targets)
