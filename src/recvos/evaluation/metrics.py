"""DAVIS region (J) and boundary (F) measures, numerically identical to the official DAVIS toolkit.

Definitions (as in davis2017-evaluation, re-derived here):

- **J** is the IoU of two binary masks; when both are empty, J = 1.
- **F** compares 1-pixel boundary maps. ``seg2bmap`` marks a pixel when it differs (XOR) from its east,
  south or south-east neighbour; on the last row only the east neighbour counts, on the last column only
  the south one, and the bottom-right pixel is never a boundary. Two boundaries match when they are
  within a disk of radius ``ceil(bound_th * ||(H, W)||)`` (``bound_th = 0.008``; a value >= 1 is a
  radius in pixels), the disk being ``{x^2 + y^2 <= r^2}`` as ``skimage.morphology.disk`` builds it.
  Precision = matched predicted boundary / predicted boundary, recall = matched GT boundary / GT
  boundary; no boundary on either side -> P = R = 1; only the GT has one -> P = 1, R = 0; only the
  prediction has one -> P = 0, R = 1; F = 2PR / (P + R), or 0 when P + R = 0.
- Per-object statistics: mean (nanmean over frames), recall (fraction of frames > 0.5) and decay
  (mean of the first quarter minus mean of the last quarter of the frames, with the toolkit's
  overlapping bin edges ``round(linspace(1, T, 5) + 1e-10) - 1``).

Where this differs from the toolkit, on purpose: the toolkit casts the bin edges to ``uint8``, so the
decay of an object scored on 256 or more frames reads wrapped-around indices (the last bin is empty: nan,
or another slice); here they are plain integers (identical results up to 255 frames).

Speed: the toolkit dilates both full-size boundary maps per frame. Here all work happens inside the
bounding box of the two masks (boundaries cannot lie elsewhere), and each dilation only covers the
part of the box where the other boundary can be matched. The counts, and so the numbers, are the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import cv2
import numpy as np

BOUND_TH = 0.008

__all__ = [
    "BOUND_TH",
    "MaskInfo",
    "bound_radius",
    "decay_bins",
    "dilate_disk",
    "disk",
    "f_measure",
    "frame_scores",
    "jaccard",
    "jaccard_and_f",
    "pair_scores",
    "seg2bmap",
    "summarize",
]


@lru_cache(maxsize=16)
def _disk_cached(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(r, r)
    out = ((x**2 + y**2) <= radius**2).astype(np.uint8)
    out.setflags(write=False)
    return out


def disk(radius: int) -> np.ndarray:
    """Disk footprint uint8 [2r+1, 2r+1]: 1 where x^2 + y^2 <= r^2 (skimage.morphology.disk's definition)."""
    return _disk_cached(int(radius))


@lru_cache(maxsize=16)
def _disk_as_rects(radius: int) -> tuple[np.ndarray, ...]:
    """The disk as a union of centred all-ones rectangles (OpenCV dilates those separably, ~30% faster).

    Row ``dy`` of the disk spans ``|dx| <= w(dy)`` with ``w`` non-increasing in ``|dy|``; for each
    distinct half-width ``w`` the rectangle reaches the last row ``h`` where ``w(h) >= w``.
    """
    d = _disk_cached(radius)
    half_widths = d[radius:].sum(axis=1) // 2  # w(dy) for dy = 0..r
    rects = []
    for w in sorted(set(half_widths.tolist())):
        h = int(np.flatnonzero(half_widths >= w)[-1])
        rects.append(np.ones((2 * h + 1, 2 * w + 1), dtype=np.uint8))
    return tuple(rects)


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by :func:`disk` (as ``cv2.dilate(mask, disk(radius))``), uint8 [H, W] -> uint8 [H, W]."""
    rects = _disk_as_rects(int(radius))
    out = cv2.dilate(mask, rects[0])
    if len(rects) > 1:
        tmp = np.empty_like(out)
        for k in rects[1:]:
            cv2.dilate(mask, k, dst=tmp)
            cv2.bitwise_or(out, tmp, dst=out)
    return out


def bound_radius(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """Boundary match tolerance in pixels for a mask of ``shape`` (H, W): ceil(bound_th * diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm(tuple(shape[-2:]))))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Boundary map of a binary mask, bool [..., H, W] -> bool [..., H, W] (the toolkit's ``seg2bmap``).

    A pixel is a boundary pixel when its 2x2 block (itself, east, south, south-east) is not uniform; on
    the last row only the east neighbour counts, on the last column only the south one, and the
    bottom-right pixel is never a boundary.
    """
    seg = np.asarray(seg).astype(bool, copy=False)
    b = np.zeros(seg.shape, dtype=bool)
    if seg.shape[-1] < 2 and seg.shape[-2] < 2:
        return b
    h_or = seg[..., :, :-1] | seg[..., :, 1:]  # [.., H, W-1]
    h_and = seg[..., :, :-1] & seg[..., :, 1:]
    # not uniform 2x2 block == any set and not all set
    b[..., :-1, :-1] = (h_or[..., :-1, :] | h_or[..., 1:, :]) ^ (h_and[..., :-1, :] & h_and[..., 1:, :])
    b[..., -1, :-1] = seg[..., -1, :-1] ^ seg[..., -1, 1:]
    b[..., :-1, -1] = seg[..., :-1, -1] ^ seg[..., 1:, -1]
    return b


class MaskInfo:
    """One binary mask of one frame, reduced to what J and F need (computed once, reused across pairs).

    ``box`` is the half-open box (y0, y1, x0, x1) of the mask pixels (None when empty); ``region`` is
    the box where its boundary can lie (``box`` grown by one pixel up/left, by one pixel of background
    or the image edge down/right, so that ``seg2bmap(mask[region])`` equals ``seg2bmap(mask)[region]``);
    ``bmap`` the boundary map over ``region``.
    """

    __slots__ = ("shape", "box", "crop", "area", "region", "bmap", "n_boundary")

    def __init__(self, mask: np.ndarray) -> None:
        m = np.asarray(mask).astype(bool, copy=False)
        if m.ndim != 2:
            raise ValueError(f"a mask must be [H, W], got shape {m.shape}")
        H, W = m.shape
        self.shape = (H, W)
        x, y, w, h = cv2.boundingRect(np.ascontiguousarray(m).view(np.uint8))
        if w == 0 or h == 0:
            self.box = None
            self.crop = None
            self.area = 0
            self.region = None
            self.bmap = None
            self.n_boundary = 0
            return
        self.box = (y, y + h, x, x + w)
        self.crop = m[y : y + h, x : x + w]
        self.area = int(np.count_nonzero(self.crop))
        ry0, ry1 = max(y - 1, 0), min(y + h + 1, H)
        rx0, rx1 = max(x - 1, 0), min(x + w + 1, W)
        self.region = (ry0, ry1, rx0, rx1)
        self.bmap = seg2bmap(m[ry0:ry1, rx0:rx1])
        self.n_boundary = int(np.count_nonzero(self.bmap))


def _intersection(a: MaskInfo, b: MaskInfo) -> int:
    """Number of pixels in both masks."""
    if a.box is None or b.box is None:
        return 0
    y0, y1 = max(a.box[0], b.box[0]), min(a.box[1], b.box[1])
    x0, x1 = max(a.box[2], b.box[2]), min(a.box[3], b.box[3])
    if y0 >= y1 or x0 >= x1:
        return 0
    ca = a.crop[y0 - a.box[0] : y1 - a.box[0], x0 - a.box[2] : x1 - a.box[2]]
    cb = b.crop[y0 - b.box[0] : y1 - b.box[0], x0 - b.box[2] : x1 - b.box[2]]
    return int(np.count_nonzero(ca & cb))


def _matched(t: MaskInfo, o: MaskInfo, radius: int) -> int:
    """Boundary pixels of ``t`` within ``radius`` of a boundary pixel of ``o`` (both with a boundary).

    Equals ``sum(bmap_t & cv2.dilate(bmap_o, disk(radius)))`` over the image, but only the part of
    ``o`` that can reach ``t``'s boundary is dilated.
    """
    H, W = t.shape
    tr, orr = t.region, o.region
    # pixels of t that can be matched: t's region within reach of o's region
    y0, y1 = max(tr[0], orr[0] - radius), min(tr[1], orr[1] + radius)
    x0, x1 = max(tr[2], orr[2] - radius), min(tr[3], orr[3] + radius)
    if y0 >= y1 or x0 >= x1:
        return 0
    # o's boundary over that area grown by radius (zero outside o's region)
    wy0, wy1, wx0, wx1 = y0 - radius, y1 + radius, x0 - radius, x1 + radius
    py0, py1 = max(wy0, orr[0]), min(wy1, orr[1])
    px0, px1 = max(wx0, orr[2]), min(wx1, orr[3])
    src = o.bmap[py0 - orr[0] : py1 - orr[0], px0 - orr[2] : px1 - orr[2]]
    if (py0, py1, px0, px1) == (wy0, wy1, wx0, wx1):
        window = src.view(np.uint8)
    else:
        window = np.zeros((wy1 - wy0, wx1 - wx0), dtype=np.uint8)
        window[py0 - wy0 : py1 - wy0, px0 - wx0 : px1 - wx0] = src
    dil = dilate_disk(window, radius)[radius : radius + y1 - y0, radius : radius + x1 - x0]
    tb = t.bmap[y0 - tr[0] : y1 - tr[0], x0 - tr[2] : x1 - tr[2]]
    return int(np.count_nonzero(tb & dil.view(bool)))


def pair_scores(gt: MaskInfo, pred: MaskInfo, radius: int) -> tuple[float, float]:
    """(J, F) of one frame from prepared masks (see :class:`MaskInfo`); ``radius`` from :func:`bound_radius`."""
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} shapes differ")
    inter = _intersection(gt, pred)
    union = gt.area + pred.area - inter
    j = 1.0 if union == 0 else inter / union

    n_g, n_p = gt.n_boundary, pred.n_boundary
    if n_p == 0 and n_g == 0:
        precision, recall = 1.0, 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = _matched(pred, gt, radius) / float(n_p)
        recall = _matched(gt, pred, radius) / float(n_g)
    if precision + recall == 0:
        f = 0.0
    else:
        f = 2 * precision * recall / (precision + recall)
    return float(j), float(f)


def frame_scores(gt: np.ndarray, pred: np.ndarray, radius: int) -> tuple[float, float]:
    """(J, F) of one frame: ``gt``, ``pred`` bool [H, W]; ``radius`` from :func:`bound_radius`."""
    return pair_scores(MaskInfo(gt), MaskInfo(pred), radius)


def _as_stack(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a).astype(bool, copy=False)
    return a[None] if a.ndim == 2 else a


def jaccard_and_f(
    gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame J and F, each float64 [T], of binary masks ``gt``, ``pred`` [T, H, W] (or [H, W] -> [1])."""
    g, p = _as_stack(gt), _as_stack(pred)
    if g.shape != p.shape:
        raise ValueError(f"gt {g.shape} and pred {p.shape} shapes differ")
    radius = bound_radius(g.shape, bound_th)
    out = np.array([frame_scores(g[t], p[t], radius) for t in range(g.shape[0])], dtype=np.float64)
    out = out.reshape(-1, 2)
    return out[:, 0].copy(), out[:, 1].copy()


def jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Region similarity (IoU) per frame, float64 [T], of bool masks [T, H, W] (or [H, W] -> [1])."""
    g, p = _as_stack(gt), _as_stack(pred)
    if g.shape != p.shape:
        raise ValueError(f"gt {g.shape} and pred {p.shape} shapes differ")
    inter = np.count_nonzero(g & p, axis=(-2, -1))
    union = np.count_nonzero(g | p, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j[union == 0] = 1.0
    return j.astype(np.float64)


def f_measure(gt: np.ndarray, pred: np.ndarray, bound_th: float = BOUND_TH) -> np.ndarray:
    """Boundary F-measure per frame, float64 [T], of bool masks [T, H, W] (or [H, W] -> [1])."""
    return jaccard_and_f(gt, pred, bound_th)[1]


def decay_bins(n: int) -> list[slice]:
    """The toolkit's four (overlapping) quarter bins over ``n`` frames, with integer (not uint8) edges."""
    ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    return [slice(int(ids[i]), int(ids[i + 1]) + 1) for i in range(4)]


def summarize(per_frame: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of per-frame values [T] for one object, as the toolkit's ``db_statistics``.

    Empty input gives (nan, nan, nan).
    """
    x = np.asarray(per_frame, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    with np.errstate(invalid="ignore"):
        mean = float(np.nanmean(x)) if not np.all(np.isnan(x)) else math.nan
        recall = float(np.mean(x > 0.5))
        bins = [x[s] for s in decay_bins(x.size)]
        first, last = bins[0], bins[3]
        if np.all(np.isnan(first)) or np.all(np.isnan(last)):
            decay = math.nan
        else:
            decay = float(np.nanmean(first) - np.nanmean(last))
    return mean, recall, decay
