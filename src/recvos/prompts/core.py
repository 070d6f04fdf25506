"""Prompts -> mask: validate a box, clicks, scribbles or a mask on one frame, then run a method.

All coordinates are pixels of the frame given, ``x`` along the width and ``y`` along the height (as in
SAM 2 and OpenCV): a box is ``(x0, y0, x1, y1)`` with corners, exclusive of ``x1``/``y1``; a point is
``(x, y)`` with ``0 <= x < W`` and ``0 <= y < H`` (floats are floored to their pixel). Methods are plain
functions registered in :data:`METHODS` under a name, so a learned method is one more entry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from recvos.errors import RecvosError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Prompts",
    "Scribble",
    "mask_from_prompts",
    "parse_box",
    "keep_clicked",
    "parse_points",
    "scale_prompts",
    "tight_box",
    "validate_prompts",
]

#: a scribble: a polyline of (x, y) points and its label (True: object, False: background)
Scribble = tuple[Sequence[Sequence[float]], bool]


@dataclass(frozen=True)
class Prompts:
    """Validated prompts for one object on one frame, in integer pixels of an [H, W] frame.

    box: (x0, y0, x1, y1) ints, x1/y1 exclusive, or None. points: int [N, 2] as (x, y). labels: bool [N]
    (True: the pixel is on the object). scribbles: list of (int [M, 2] (x, y) polyline, label). mask: bool
    [H, W] or None (a given mask, taken as the object where no other prompt says otherwise).
    """

    size: tuple[int, int]
    box: tuple[int, int, int, int] | None = None
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))
    scribbles: list[tuple[np.ndarray, bool]] = field(default_factory=list)
    mask: np.ndarray | None = None

    @property
    def num_positive(self) -> int:
        """Positive clicks plus positive scribbles."""
        return int(self.labels.sum()) + sum(1 for _, lab in self.scribbles if lab)


#: the method used when none is named (``recvos segment --box``, ``Segmenter.add_prompt``, ``recvos app``)
DEFAULT_METHOD = "learned"

#: method name -> fn(frame uint8 RGB [H, W, 3], prompts, previous bool [H, W] | None, **options) -> bool [H, W]
METHODS: dict[str, Callable[..., np.ndarray]] = {}


def _method(name: str) -> Callable[..., np.ndarray]:
    from recvos.prompts import grabcut, learned  # noqa: F401  (they register themselves; cached after once)

    if name not in METHODS:
        raise RecvosError(
            f"prompt method {name!r} is not available; use one of: {', '.join(sorted(METHODS))}"
        )
    return METHODS[name]


def _finite(values: Sequence[float], what: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        raise RecvosError(f"{what}: expected numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise RecvosError(f"{what}: coordinates must be finite numbers, got {values!r}")
    return out


def _check_point(x: float, y: float, size: tuple[int, int], what: str) -> tuple[int, int]:
    H, W = size
    if not (0 <= x < W and 0 <= y < H):
        raise RecvosError(
            f"{what} ({x:g}, {y:g}) is outside the {W}x{H} frame; give x in [0, {W}) and y in [0, {H})"
        )
    return int(x), int(y)


def scale_prompts(prompts: Prompts, s: float, size: tuple[int, int]) -> Prompts:
    """The prompts of a frame resized by ``s`` to ``size`` (H, W): pixels map to the pixels they fall in."""
    if s == 1.0:
        return prompts
    h, w = size

    def xy(a: np.ndarray) -> np.ndarray:
        out = np.floor((a + 0.5) * s).astype(np.int64)
        out[:, 0] = out[:, 0].clip(0, w - 1)
        out[:, 1] = out[:, 1].clip(0, h - 1)
        return out

    box = None
    if prompts.box is not None:
        x0, y0, x1, y1 = prompts.box
        box = (
            int(x0 * s),
            int(y0 * s),
            max(int(x0 * s) + 1, min(w, round(x1 * s))),
            max(int(y0 * s) + 1, min(h, round(y1 * s))),
        )
    mask = None
    if prompts.mask is not None:
        mask = cv2.resize(prompts.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return Prompts(
        (h, w),
        box,
        xy(prompts.points) if len(prompts.points) else prompts.points,
        prompts.labels,
        [(xy(line), lab) for line, lab in prompts.scribbles],
        mask,
    )


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive ends, of a non-empty bool mask: the box a user would draw."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def keep_clicked(fg: np.ndarray, prompts: Prompts, largest: bool) -> np.ndarray:
    """Drop connected components of ``fg`` that hold no positive click or scribble point (with no such
    seed and ``largest``: keep the largest component only)."""
    seeds = [p for p, lab in zip(prompts.points, prompts.labels, strict=True) if lab]
    seeds += [p for line, lab in prompts.scribbles if lab for p in line]
    if (not seeds and not largest) or not fg.any():
        return fg
    n, comp, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 2:
        return fg
    if not seeds:
        return comp == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    keep = {int(comp[y, x]) for x, y in seeds} - {0}
    return np.isin(comp, list(keep)) if keep else fg


def validate_prompts(
    size: tuple[int, int],
    *,
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] | np.ndarray | None = None,
    labels: Sequence[int | bool] | np.ndarray | None = None,
    scribbles: Sequence[Scribble] | None = None,
    mask: np.ndarray | None = None,
) -> Prompts:
    """Check prompts against a frame of ``size`` (H, W) and return them as :class:`Prompts`.

    Raises RecvosError (one line naming the input and the fix) for: no prompt at all, a box that is not
    4 numbers, reversed or of zero area, or entirely outside the frame (a box partly outside is clipped),
    clicks outside the frame, labels that do not match the points, an empty or wrongly sized mask.
    ``labels`` defaults to all positive.
    """
    H, W = int(size[0]), int(size[1])
    bx = None
    if box is not None:
        b = _finite(np.asarray(box, dtype=object).ravel().tolist(), "box")
        if len(b) != 4:
            raise RecvosError(f"box: expected 4 numbers x0,y0,x1,y1, got {len(b)}: {box!r}")
        x0, y0, x1, y1 = b
        if x1 <= x0 or y1 <= y0:
            what = "zero area" if (x1 == x0 or y1 == y0) else "reversed corners"
            raise RecvosError(
                f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has {what}; give corners x0,y0,x1,y1 with x0 < x1 and "
                "y0 < y1 (not x, y, width, height)"
            )
        cx0, cy0 = max(0, math.floor(x0)), max(0, math.floor(y0))
        cx1, cy1 = min(W, math.ceil(x1)), min(H, math.ceil(y1))
        if cx1 <= cx0 or cy1 <= cy0:
            raise RecvosError(
                f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {W}x{H} frame; draw it on the frame"
            )
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1) and (x0 < 0 or y0 < 0 or x1 > W or y1 > H):
            log.debug("box clipped to the frame: (%d, %d, %d, %d)", cx0, cy0, cx1, cy1)
        bx = (cx0, cy0, cx1, cy1)

    pts = np.zeros((0, 2), np.int64)
    labs = np.zeros((0,), bool)
    if points is not None and len(points) > 0:
        arr = [_finite(p, f"point {i}") for i, p in enumerate(points)]
        if any(len(p) != 2 for p in arr):
            raise RecvosError(f"points: each point is (x, y), got {points!r}")
        pts = np.array([_check_point(x, y, (H, W), f"click {i}") for i, (x, y) in enumerate(arr)], np.int64)
        if labels is None:
            labs = np.ones(len(pts), bool)
        else:
            lab = np.asarray(labels).ravel()
            if len(lab) != len(pts):
                raise RecvosError(
                    f"labels: {len(lab)} labels for {len(pts)} points; give one label (1 or 0) per point"
                )
            if lab.dtype.kind not in "biuf" or not np.isin(lab, (0, 1)).all():
                raise RecvosError(f"labels: each label is 1 (object) or 0 (background), got {lab.tolist()}")
            labs = lab.astype(bool)
    elif labels is not None and len(labels) > 0:
        raise RecvosError(f"labels: {len(labels)} labels but no points; give points=[(x, y), ...] with them")

    scr: list[tuple[np.ndarray, bool]] = []
    for i, s in enumerate(scribbles or []):
        try:
            line, lab = s
        except (TypeError, ValueError):
            raise RecvosError(f"scribble {i}: expected (points, label), got {s!r}") from None
        xy = [_finite(p, f"scribble {i}") for p in line]
        if not xy or any(len(p) != 2 for p in xy):
            raise RecvosError(f"scribble {i}: expected a non-empty list of (x, y) points")
        scr.append(
            (
                np.array([_check_point(x, y, (H, W), f"scribble {i} point") for x, y in xy], np.int64),
                bool(lab),
            )
        )

    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != (H, W):
            raise RecvosError(
                f"mask: shape {tuple(m.shape)} differs from the frame's {(H, W)}; give a mask of the frame size"
            )
        m = m.astype(bool)
        if not m.any():
            raise RecvosError("mask: the mask is empty; give at least one object pixel")

    if bx is None and not len(pts) and not scr and m is None:
        raise RecvosError("no prompt given: pass a box, points (clicks), scribbles or a mask")
    return Prompts((H, W), bx, pts, labs, scr, m)


def mask_from_prompts(
    frame: np.ndarray,
    *,
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] | np.ndarray | None = None,
    labels: Sequence[int | bool] | np.ndarray | None = None,
    scribbles: Sequence[Scribble] | None = None,
    mask: np.ndarray | None = None,
    method: str | None = None,
    previous: np.ndarray | None = None,
    **options: object,
) -> np.ndarray:
    """One object's mask on ``frame`` (uint8 RGB [H, W, 3]) from prompts -> bool [H, W].

    box (x0, y0, x1, y1), points [(x, y), ...] with labels (1 object, 0 background; default all 1),
    scribbles [(polyline, label), ...] and mask (bool [H, W]) may be combined. ``previous`` (bool [H, W]) is
    this object's mask before the latest prompts (the last result of an interactive session, or a
    propagated mask being corrected): methods start from it. ``method``: "learned" (the shipped prompt head;
    ``model=`` another prompt-head checkpoint) or "grabcut" (OpenCV, no training); None: :data:`DEFAULT_METHOD`.
    ``options`` go to the method. A mask alone is returned as given.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise RecvosError(f"frame: expected uint8 RGB [H, W, 3], got {frame.dtype} {tuple(frame.shape)}")
    fn = _method(method or DEFAULT_METHOD)
    prompts = validate_prompts(
        frame.shape[:2], box=box, points=points, labels=labels, scribbles=scribbles, mask=mask
    )
    if previous is not None:
        previous = np.asarray(previous)
        if previous.shape != frame.shape[:2]:
            raise RecvosError(
                f"previous: shape {tuple(previous.shape)} differs from the frame's {frame.shape[:2]}"
            )
        previous = previous.astype(bool)
    if prompts.box is None and not len(prompts.points) and not prompts.scribbles:
        return prompts.mask.copy()
    return np.asarray(fn(frame, prompts, previous, **options), dtype=bool)


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"X0,Y0,X1,Y1"`` (the CLI's ``--box``) -> a box tuple."""
    parts = [p.strip() for p in text.split(",")]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise RecvosError(
            f"--box {text!r}: expected 4 numbers X0,Y0,X1,Y1 (pixels of the prompted frame)"
        ) from None
    if len(vals) != 4:
        raise RecvosError(f"--box {text!r}: expected 4 numbers X0,Y0,X1,Y1, got {len(vals)}")
    return vals[0], vals[1], vals[2], vals[3]


def parse_points(text: str) -> tuple[list[tuple[float, float]], list[int]]:
    """``"x,y,+;x,y,-"`` (the CLI's ``--points``) -> (points, labels); the sign defaults to ``+``."""
    points: list[tuple[float, float]] = []
    labels: list[int] = []
    for item in filter(None, (s.strip() for s in text.split(";"))):
        parts = [p.strip() for p in item.split(",")]
        sign = "+"
        if len(parts) == 3:
            sign = parts.pop()
        if len(parts) != 2 or sign not in ("+", "-", "1", "0"):
            raise RecvosError(
                f"--points {text!r}: each click is x,y,+ or x,y,- separated by ';', got {item!r}"
            )
        try:
            points.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise RecvosError(f"--points {text!r}: {item!r} has a coordinate that is not a number") from None
        labels.append(1 if sign in ("+", "1") else 0)
    if not points:
        raise RecvosError(f'--points {text!r}: no click found; write e.g. "120,80,+;40,30,-"')
    return points, labels
