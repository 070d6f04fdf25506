"""Clip sampling and joint transforms: windows, clip format, determinism, mid-clip objects, sampler, bad input."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from recvos.data.clips import ArrayVideo, ClipDataset, ClipKey, ClipSampler, clip_to_tensors, sample_window
from recvos.data.transforms import ClipTransform, resize_clip, warp_clip
from recvos.errors import RecvosError


def square_video(name="sq", T=12, H=32, W=48, objects=((1, 0),), seed=0) -> ArrayVideo:
    """Noise background; object k is a coloured 8x8 square moving right, visible from frame `start`."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(T, H, W, 3), dtype=np.uint8)
    masks = np.zeros((T, H, W), dtype=np.int64)
    for k, (oid, start) in enumerate(objects):
        colour = np.array([[250, 30, 30], [30, 250, 30], [30, 30, 250]][k % 3], dtype=np.uint8)
        for t in range(start, T):
            y, x = 4 + 10 * k, (2 + 2 * t) % (W - 8)
            frames[t, y : y + 8, x : x + 8] = colour
            masks[t, y : y + 8, x : x + 8] = oid
    return ArrayVideo(name, frames, masks)


@dataclass
class SparseVideo:
    """A VideoSequence-like video annotated every 5th frame (as YouTube-VOS), with object_ids/first_frame."""

    inner: ArrayVideo
    name: str = "sparse"

    @property
    def frame_paths(self):
        return self.inner.frame_paths

    @property
    def object_ids(self):
        return self.inner.object_ids

    def load_frame(self, i):
        return self.inner.load_frame(i)

    def load_mask(self, i):
        return self.inner.load_mask(i) if i % 5 == 0 else None

    @property
    def annotated_indices(self):
        return [i for i in range(len(self.inner.frames)) if i % 5 == 0]


def test_sample_window_modes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = sample_window(20, range(20), 5, 3, "all", rng)
        assert len(idx) == 5 and idx[-1] < 20
        d = np.diff(idx)
        assert (d == d[0]).all() and 1 <= d[0] <= 3
    ann = [0, 5, 10, 15, 20, 25]
    for _ in range(20):
        idx = sample_window(26, ann, 3, 2, "annotated", rng)
        assert set(idx) <= set(ann) and len(idx) == 3
        idx = sample_window(26, ann, 5, 1, "all", rng)
        assert idx[0] in ann  # starts on an annotated frame (the first masks come from it)
    assert sample_window(4, range(4), 5, 1, "all", rng) is None
    assert sample_window(26, ann, 7, 1, "annotated", rng) is None


def test_clip_format_and_determinism():
    videos = [square_video("a", objects=((1, 0), (2, 0))), square_video("b", seed=1)]
    ds = ClipDataset(
        videos,
        size=(24, 40),
        num_frames=3,
        max_objects=3,
        max_stride=2,
        transform=ClipTransform((24, 40)),
        length=10,
        seed=3,
    )
    item = ds[ClipKey(4, 3)]
    assert item["frames"].shape == (3, 3, 24, 40) and item["frames"].dtype == torch.float32
    # uint8 frames scaled to [0, 1]: every value is k / 255
    scaled = item["frames"] * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-3) and 0 <= scaled.min() and scaled.max() <= 255
    assert item["masks"].shape == (3, 3, 24, 40)
    assert item["valid"].shape == (3, 3) and item["valid"].dtype == torch.bool
    assert item["present"].shape == (3,) and item["annotated"].all()
    # padded slots are empty, not present and never valid
    n = int(item["present"].sum())
    assert not item["valid"][:, n:].any() and float(item["masks"][:, n:].abs().sum()) == 0
    again = ds[ClipKey(4, 3)]
    assert torch.equal(item["frames"], again["frames"]) and torch.equal(item["masks"], again["masks"])
    other = ds[ClipKey(5, 3)]
    assert not torch.equal(item["frames"], other["frames"])
    batch = torch.utils.data.default_collate([ds[ClipKey(i, 3)] for i in range(2)])
    assert batch["frames"].shape == (2, 3, 3, 24, 40) and batch["valid"].shape == (2, 3, 3)


def test_object_appearing_mid_clip_is_not_valid_before():
    v = square_video("late", T=6, objects=((1, 0), (2, 3)))
    frames, ids = v.frames, v.masks
    item = clip_to_tensors(frames, ids, np.ones(6, bool), [1, 2], 3)
    assert item["valid"][:, 0].all()
    assert item["valid"][:, 1].tolist() == [False, False, False, True, True, True]
    assert item["present"].tolist() == [True, True, False]


def test_sparse_annotations_mark_frames():
    v = SparseVideo(square_video(T=16))
    ds = ClipDataset([v], size=(32, 48), num_frames=6, max_objects=1, length=4)
    item = ds[ClipKey(0, 6)]
    ann = item["annotated"]
    assert ann[0] and ann.sum() >= 1 and not ann.all()
    assert not item["valid"][~ann].any()
    assert float(item["masks"][~ann].sum()) == 0  # unknown frames carry no mask
    ds2 = ClipDataset([v], size=(32, 48), num_frames=3, max_objects=1, frames="annotated", length=4)
    assert ds2[ClipKey(1, 3, "annotated")]["annotated"].all()
    # the S2S curriculum asks an "all"-frames dataset for annotated-only clips first
    assert ds[ClipKey(2, 3, "annotated")]["annotated"].all()
    with pytest.raises(RecvosError, match="annotated frames"):
        ds[ClipKey(3, 5, "annotated")]  # only 4 annotated frames


def test_transform_one_draw_per_clip_and_joint_masks():
    v = square_video(T=1, H=40, W=60)
    frames = np.repeat(v.frames, 4, 0)
    ids = np.repeat(v.masks, 4, 0)
    still = ClipTransform((30, 50), jitter_translate=0, jitter_rotate=0, jitter_scale=0, hue=0.05)
    f, m = still(frames, ids, np.random.default_rng(0))
    assert f.shape == (4, 30, 50, 3) and m.shape == (4, 30, 50)
    for t in range(1, 4):  # one draw per clip: identical frames stay identical
        assert np.array_equal(f[t], f[0]) and np.array_equal(m[t], m[0])
    moving = ClipTransform((30, 50), jitter_translate=0.05)
    f2, m2 = moving(frames, ids, np.random.default_rng(0))
    assert not np.array_equal(m2[1], m2[0])  # per-frame jitter moves the object
    assert set(np.unique(m2)) <= {0, 1}  # nearest for masks: no new ids
    # without colour change the masked pixels keep the object's colour (frames and masks warped jointly)
    geo = ClipTransform((30, 50), brightness=0, contrast=0, saturation=0, hue=0)
    checked = 0
    for seed in range(10):
        f3, m3 = geo(frames, ids, np.random.default_rng(seed))
        inner = m3[0] == 1
        if inner.sum() > 10:
            assert np.median(f3[0][inner][:, 0]) > 200 and np.median(f3[0][inner][:, 1]) < 80
            checked += 1
    assert checked >= 5


def test_masks_on_another_grid_are_mapped_to_frames():
    v = square_video(T=2, H=32, W=48)
    big = np.repeat(np.repeat(v.masks, 2, 1), 2, 2)  # masks at twice the frame resolution
    f1, m1 = resize_clip(v.frames, v.masks, (16, 24))
    f2, m2 = resize_clip(v.frames, big, (16, 24))
    assert np.array_equal(f1, f2)
    assert (m1 != m2).mean() < 0.02
    # identity warp keeps everything
    f, m = warp_clip(v.frames, v.masks, [np.eye(3)] * 2, (32, 48))
    assert np.array_equal(f, v.frames) and np.array_equal(m, v.masks)


def test_sampler_ranks_resume_and_shared_length():
    ds = ClipDataset([square_video(T=14)], num_frames=3, length=24)
    kw = dict(batch_size=2, seed=1, num_frames=3, num_frames_max=6)

    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    r0 = take(ClipSampler(ds, num_replicas=2, rank=0, **kw), 30)
    r1 = take(ClipSampler(ds, num_replicas=2, rank=1, **kw), 30)
    assert not {k.clip_id for k in r0} & {k.clip_id for k in r1}
    for b in range(15):  # T drawn per batch, equal inside a batch and across ranks
        ts = {k.num_frames for k in r0[2 * b : 2 * b + 2] + r1[2 * b : 2 * b + 2]}
        assert len(ts) == 1 and 3 <= ts.pop() <= 6
    assert len({k.num_frames for k in r0}) > 1
    # epochs (6 batches of 2 per rank) reshuffle and get fresh clip ids
    assert {k.clip_id // 24 for k in r0} == {0, 1, 2}
    resumed = take(ClipSampler(ds, num_replicas=2, rank=0, start_batch=7, **kw), 16)
    assert resumed == r0[14:30]


def test_sampler_curriculum_switches_frame_mode():
    ds = ClipDataset([square_video(T=14)], num_frames=3, length=24)
    s = ClipSampler(ds, batch_size=2, num_frames=3, accumulate=2, annotated_until_step=2)
    keys = list(itertools.islice(s, 16))
    modes = [k.frames for k in keys]
    assert modes[:8] == ["annotated"] * 8 and modes[8:] == ["all"] * 8  # step = micro-batch // accumulate


def test_bad_inputs():
    with pytest.raises(RecvosError, match="lower data.num_frames"):
        ClipDataset([square_video(T=4)], num_frames=5)
    empty = ArrayVideo("empty", np.zeros((8, 16, 16, 3), np.uint8), np.zeros((8, 16, 16), np.int64))
    ds = ClipDataset([empty], num_frames=3)
    with pytest.raises(RecvosError, match="no visible object"):
        ds[ClipKey(0, 3)]
    with pytest.raises(RecvosError, match="no training videos"):
        ClipDataset(None, num_frames=3)
    with pytest.raises(RecvosError, match="no sequence has annotated objects"):
        ClipDataset([SparseVideo(empty)], num_frames=3)
