"""Composite multi-object clips: pasted objects follow their tracks, occlude, get new consistent ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recvos.data.clips import ArrayVideo, ClipDataset, ClipKey, CompositeOptions, SourceMix
from recvos.data.composite import paste_objects


def _video(T, H, W, colour, box, step):
    """Flat grey frames with a coloured box moving right by `step` px per frame; masks id 1."""
    frames = np.full((T, H, W, 3), 100, np.uint8)
    ids = np.zeros((T, H, W), np.int64)
    y0, y1, x0, x1 = box
    for t in range(T):
        frames[t, y0:y1, x0 + step * t : x1 + step * t] = colour
        ids[t, y0:y1, x0 + step * t : x1 + step * t] = 1
    return frames, ids, np.ones(T, bool)


def test_paste_objects_tracks_occlusion_ids():
    T, H, W = 4, 40, 60
    base = _video(T, H, W, (255, 0, 0), (10, 30, 10, 30), 0)  # a large static red object, id 1
    d1 = _video(T, H, W, (0, 255, 0), (12, 28, 5, 21), 3)  # green, moves right 3 px per frame
    d2 = _video(T, H, W, (0, 0, 255), (15, 25, 10, 20), 3)  # blue, on top of the green one
    frames_in = base[0].copy()
    rng = np.random.default_rng(0)
    frames, ids, ann = paste_objects(*base, [d1, d2], rng, scale=(1.0, 1.0), max_offset=0.0, hflip=0.0)
    assert np.array_equal(base[0], frames_in)  # inputs untouched
    assert set(np.unique(ids)) == {0, 1, 2, 3} and ann.all()
    for t in range(T):
        # consistent ids: pasted pixels carry the donor's colour
        assert (frames[t][ids[t] == 2] == (0, 255, 0)).all()
        assert (frames[t][ids[t] == 3] == (0, 0, 255)).all()
        # the later donor occludes the earlier one: the blue box region belongs to id 3 entirely
        assert (ids[t][d2[1][t] == 1] == 3).all()
        # the base object lost the pixels covered by the pasted ones
        covered = (d1[1][t] == 1) | (d2[1][t] == 1)
        assert not (ids[t][covered] == 1).any()
        assert (ids[t][(base[1][t] == 1) & ~covered] == 1).all()
    # pasted objects move along their own tracks (3 px per frame)
    xs = [np.flatnonzero((ids[t] == 2).any(0)).max() for t in range(T)]
    assert np.diff(xs).tolist() == [3, 3, 3]


def test_unannotated_donor_frames_are_not_pasted():
    T, H, W = 3, 20, 20
    base = _video(T, H, W, (255, 0, 0), (2, 6, 2, 6), 0)
    d = list(_video(T, H, W, (0, 255, 0), (10, 16, 10, 16), 0))
    d[2] = np.array([True, False, True])
    _, ids, _ = paste_objects(
        *base, [tuple(d)], np.random.default_rng(0), scale=(1, 1), max_offset=0, hflip=0
    )
    assert [(ids[t] == 2).any() for t in range(T)] == [True, False, True]


def test_composite_source_gives_multi_object_clips():
    def single(seed):
        rng = np.random.default_rng(seed)
        frames = rng.integers(0, 255, (10, 32, 48, 3), dtype=np.uint8)
        masks = np.zeros((10, 32, 48), np.int64)
        for t in range(10):
            masks[t, 8:24, 10 + t : 26 + t] = 1
        return ArrayVideo(f"v{seed}", frames, masks)

    videos = [single(s) for s in range(4)]
    ds = ClipDataset(
        videos,
        size=(32, 48),
        num_frames=3,
        max_objects=3,
        mix=SourceMix(real=0.0, composite=1.0),
        composite=CompositeOptions(min_pasted=2, max_pasted=2, scale=[0.5, 0.7], max_offset=0.2),
        length=8,
    )
    counts = []
    for i in range(6):
        item = ds[ClipKey(i, 3)]
        assert item["name"].startswith("composite:") and item["name"].count("+") == 2
        counts.append(int(item["present"].sum()))
        # objects never overlap in the targets (one id per pixel)
        assert float(item["masks"].sum(1).max()) <= 1.0
    assert max(counts) >= 2 and torch.tensor(counts).float().mean() > 1.5


@pytest.mark.shared
def test_davis2016_composite_clips(davis2016_root):
    """Real DAVIS-2016 (240p frames, 480p masks): composite clips hold several objects aligned with the frames."""
    from recvos.data.datasets import open_dataset
    from recvos.data.transforms import ClipTransform

    videos = open_dataset("davis2016", davis2016_root, "train")
    ds = ClipDataset(
        videos,
        size=(120, 214),
        num_frames=3,
        max_objects=3,
        max_stride=2,
        transform=ClipTransform((120, 214)),
        mix=SourceMix(real=0.0, composite=1.0),
        length=8,
    )
    item = ds[ClipKey(0, 3)]
    assert item["frames"].shape == (3, 3, 120, 214) and item["masks"].shape == (3, 3, 120, 214)
    assert int(item["present"].sum()) >= 2
    assert item["valid"][:, 0].all() and float(item["masks"][:, 0].sum()) > 0
    real = ClipDataset(videos, size=(120, 214), num_frames=3, max_objects=1, length=8)[ClipKey(1, 3)]
    # the object mask (from 480p) lands on the 240p frame grid covering the same fraction of the frame
    name, first = real["name"].removeprefix("real:").split("@")
    want = [float(videos[name].load_mask(int(first) + t).mean()) for t in range(3)]  # stride 1
    assert min(want) > 0.01
    assert real["masks"][:, 0].mean((1, 2)).tolist() == pytest.approx(want, abs=0.005)
