"""J and F against a line-by-line mirror of the official DAVIS toolkit's per-frame algorithm, and by hand."""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest

from recvos.evaluation.metrics import (
    MaskInfo,
    bound_radius,
    decay_bins,
    dilate_disk,
    disk,
    f_measure,
    jaccard,
    jaccard_and_f,
    pair_scores,
    seg2bmap,
    summarize,
)

# ---------------------------------------------------------------- the toolkit's per-frame algorithm, mirrored


def _toolkit_disk(r):
    L = np.arange(-r, r + 1)
    X, Y = np.meshgrid(L, L)
    return np.array((X**2 + Y**2) <= r**2, dtype=np.uint8)


def _toolkit_bmap(seg):
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def _toolkit_f(fg, gt, bound_th=0.008):
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(fg.shape))
    fb, gb = _toolkit_bmap(fg), _toolkit_bmap(gt)
    k = _toolkit_disk(bound_pix)
    fd = cv2.dilate(fb.astype(np.uint8), k)
    gd = cv2.dilate(gb.astype(np.uint8), k)
    gt_match, fg_match = gb * fd, fb * gd
    n_fg, n_gt = np.sum(fb), np.sum(gb)
    if n_fg == 0 and n_gt > 0:
        p, r = 1, 0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0, 1
    elif n_fg == 0 and n_gt == 0:
        p, r = 1, 1
    else:
        p, r = np.sum(fg_match) / float(n_fg), np.sum(gt_match) / float(n_gt)
    return 0 if p + r == 0 else 2 * p * r / (p + r)


def _toolkit_j(gt, fg):
    inter, union = np.sum(gt & fg), np.sum(gt | fg)
    return 1 if np.isclose(union, 0) else inter / union


def _toolkit_stats(x):
    ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(np.uint8)  # the toolkit's uint8
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bins = [x[ids[i] : ids[i + 1] + 1] for i in range(4)]
        return np.nanmean(x), np.nanmean(x > 0.5), np.nanmean(bins[0]) - np.nanmean(bins[3])


def _random_mask(rng, H, W):
    kind = rng.integers(0, 6)
    if kind == 0:
        return np.zeros((H, W), bool)
    if kind == 1:
        return rng.random((H, W)) < rng.random()
    if kind == 2:
        return np.ones((H, W), bool)
    m = np.zeros((H, W), bool)
    for _ in range(rng.integers(1, 4)):
        y, x = rng.integers(0, H), rng.integers(0, W)
        if kind == 3:
            m[y : y + rng.integers(1, H + 1), x : x + rng.integers(1, W + 1)] = True
        else:
            yy, xx = np.mgrid[:H, :W]
            m |= (yy - y) ** 2 + (xx - x) ** 2 <= rng.integers(1, max(H, W)) ** 2
    return m


# ------------------------------------------------------------------------------------------------- tests


def test_random_masks_equal_toolkit_exactly():
    rng = np.random.default_rng(0)
    for _ in range(300):
        H, W = (int(v) for v in rng.integers(1, 48, 2))
        th = 0.008 if rng.random() < 0.5 else float(rng.choice([0.05, 0.1, 2.0, 5.0]))
        g = np.stack([_random_mask(rng, H, W) for _ in range(2)])
        p = np.stack([_random_mask(rng, H, W) for _ in range(2)])
        if rng.random() < 0.3:
            p[0] = np.roll(g[0], tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
        J, F = jaccard_and_f(g, p, th)
        for t in range(2):
            assert F[t] == _toolkit_f(p[t], g[t], th), (H, W, th, t)
            assert J[t] == _toolkit_j(g[t], p[t]), (H, W, th, t)
        assert np.array_equal(seg2bmap(g), np.stack([_toolkit_bmap(m) for m in g]))
        assert np.array_equal(jaccard(g, p), J)
        assert np.array_equal(f_measure(g, p, th), F)


def test_davis_sized_shifted_masks_equal_toolkit():
    yy, xx = np.mgrid[:480, :854]
    g = ((yy - 240) ** 2 / 150**2 + (xx - 400) ** 2 / 260**2 <= 1) | ((yy > 400) & (xx > 700))
    p = np.roll(g, (5, 5), axis=(0, 1))
    p[100:140, 50:90] = True  # a false positive blob far away
    J, F = jaccard_and_f(g, p)
    assert F[0] == _toolkit_f(p, g) and J[0] == _toolkit_j(g, p)
    assert 0 < F[0] < 1


def test_disk_matches_skimage():
    skm = pytest.importorskip("skimage.morphology")
    for r in range(0, 15):
        assert np.array_equal(disk(r), skm.disk(r))
        assert np.array_equal(disk(r), skm.disk(float(r)))  # the toolkit passes np.ceil(...), a float


def test_dilate_disk_equals_opencv_with_disk():
    rng = np.random.default_rng(1)
    for r in range(0, 14):
        x = (rng.random((41, 57)) < 0.02).astype(np.uint8)
        assert np.array_equal(dilate_disk(x, r), cv2.dilate(x, disk(r))), r


def test_bound_radius():
    assert bound_radius((480, 854)) == 8  # ceil(0.008 * 979.6)
    assert bound_radius((1080, 1920)) == math.ceil(0.008 * math.hypot(1080, 1920)) == 18
    assert bound_radius((10, 10), 3) == 3


def test_seg2bmap_by_hand():
    seg = np.array(
        [
            [0, 0, 0, 0],
            [0, 1, 1, 0],
            [0, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        bool,
    )
    # XOR with east/south/south-east: the ring offset half a pixel towards the origin
    expected = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        bool,
    )
    assert np.array_equal(seg2bmap(seg), expected)
    # last row / last column: only the east / south neighbour counts; bottom-right never
    edge = np.zeros((3, 3), bool)
    edge[2, 2] = True
    assert np.array_equal(np.argwhere(seg2bmap(edge)), [[1, 1], [1, 2], [2, 1]])
    assert not seg2bmap(np.ones((5, 6), bool)).any()  # a full mask has no boundary


def test_edge_cases():
    z = np.zeros((20, 30), bool)
    m = z.copy()
    m[5:10, 5:10] = True
    assert pair_scores(MaskInfo(z), MaskInfo(z), 1) == (1.0, 1.0)  # both empty
    assert pair_scores(MaskInfo(m), MaskInfo(z), 1) == (0.0, 0.0)  # prediction empty: P=1, R=0
    assert pair_scores(MaskInfo(z), MaskInfo(m), 1) == (0.0, 0.0)  # GT empty: P=0, R=1
    assert pair_scores(MaskInfo(m), MaskInfo(m), 1) == (1.0, 1.0)
    full = np.ones((20, 30), bool)
    # full masks have no boundary -> F = 1 (both boundaries empty); J = 1
    assert pair_scores(MaskInfo(full), MaskInfo(full), 1) == (1.0, 1.0)


def test_jaccard_and_f_by_hand():
    g = np.zeros((1, 50, 50), bool)
    p = np.zeros((1, 50, 50), bool)
    g[0, 10:20, 10:20] = True  # 100 px
    p[0, 10:20, 15:25] = True  # 100 px, 50 shared
    J, F = jaccard_and_f(g, p, bound_th=1)
    assert J[0] == pytest.approx(50 / 150)
    # seg2bmap draws each square as the 40-pixel ring of an 11x11 box (rows 9-19; cols 9-19 and 14-24).
    # Within 1 pixel (a plus-shaped disk) of the other ring: 7 pixels of the top row, 7 of the bottom row
    # and 2 of the facing inner column (the ends next to those rows), so P = R = 16/40 and F = 0.4.
    assert F[0] == pytest.approx(0.4)
    J, F = jaccard_and_f(g, p, bound_th=5)
    assert F[0] == 1.0  # every boundary pixel within 5 px of the other boundary


def test_summarize_matches_toolkit_statistics():
    rng = np.random.default_rng(2)
    for n in [1, 2, 3, 4, 5, 7, 10, 48, 100, 200, 255]:
        x = rng.random(n)
        m, r, d = summarize(x)
        tm, tr, td = _toolkit_stats(x)
        assert (m, r, d) == pytest.approx((tm, tr, td), abs=1e-15), n


@pytest.mark.parametrize("n", [256, 300])
def test_decay_is_right_past_255_frames(n):
    x = np.linspace(1.0, 0.0, n)
    _, _, d = summarize(x)
    bins = decay_bins(n)
    assert bins[0].start == 0 and bins[3].stop == n
    assert d == pytest.approx(x[bins[0]].mean() - x[bins[3]].mean())
    assert d == pytest.approx(0.75, abs=0.01)  # first quarter ~0.875, last ~0.125
    # the toolkit's uint8 bin edges wrap around here: its decay is wrong (nan or another value)
    td = _toolkit_stats(x)[2]
    assert not (td == pytest.approx(d))


def test_summarize_recall_and_empty():
    m, r, d = summarize(np.array([0.4, 0.6, 0.9, 0.5]))
    assert m == pytest.approx(0.6)
    assert r == 0.5  # 0.5 is not > 0.5
    assert all(math.isnan(v) for v in summarize(np.array([])))
