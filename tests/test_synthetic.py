"""Synthetic clips: determinism, exact ground truth, motion, occlusion, leaving and re-entering, writers."""

from __future__ import annotations

import numpy as np
import pytest

from recvos.data.frames import open_frames
from recvos.data.masks import read_mask
from recvos.data.synthetic import synthetic_clip, write_synthetic_video
from recvos.errors import RecvosError


def test_shapes_dtypes_and_ids():
    clip = synthetic_clip(0, num_frames=5, size=(40, 56), num_objects=3)
    assert clip.frames.shape == (5, 40, 56, 3) and clip.frames.dtype == np.uint8
    assert clip.masks.shape == (5, 40, 56) and np.issubdtype(clip.masks.dtype, np.integer)
    assert set(np.unique(clip.masks[0]).tolist()) == {0, 1, 2, 3}  # background and every object in frame 0
    assert set(np.unique(clip.masks).tolist()) == {0, 1, 2, 3}
    assert clip.object_ids == [1, 2, 3] and len(clip) == 5


def test_deterministic_per_seed():
    a, b, c = synthetic_clip(7), synthetic_clip(7), synthetic_clip(8)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("seed", range(10))
def test_every_object_visible_in_first_frame(seed):
    clip = synthetic_clip(seed, num_frames=2, num_objects=4)
    counts = np.bincount(clip.masks[0].ravel(), minlength=5)
    assert (counts[1:] >= 20).all(), counts


def test_objects_move_and_background_is_textured():
    clip = synthetic_clip(1, num_frames=8)
    assert not np.array_equal(clip.masks[0], clip.masks[-1])
    bg = clip.frames[0][clip.masks[0] == 0]
    assert bg.std() > 5  # textured, not flat
    # frames agree with masks: inside an object, the frame is not the background of another frame
    assert not np.array_equal(clip.frames[0], clip.frames[1])


def test_masks_reflect_occlusion():
    """Where an object's full silhouette is hidden, the mask holds an object drawn above it."""
    found = 0
    for seed in range(20):
        clip = synthetic_clip(seed, num_frames=12, size=(48, 64), num_objects=3, amodal=True)
        for t in range(12):
            for k in range(3):
                visible = clip.masks[t] == k + 1
                assert not (visible & ~clip.amodal[t, k]).any()
                hidden = clip.amodal[t, k] & ~visible
                if hidden.any():
                    assert (clip.masks[t][hidden] > k + 1).all()
                    found += 1
    assert found > 0


def test_objects_leave_and_reenter():
    def reenters(masks, k):
        present = (masks == k).any(axis=(1, 2))
        gone = np.flatnonzero(~present)
        return gone.size > 0 and present[gone[0] :].any()

    hits = sum(
        reenters(synthetic_clip(seed, num_frames=30, size=(48, 64), num_objects=2).masks, k)
        for seed in range(20)
        for k in (1, 2)
    )
    assert hits > 0


def test_write_synthetic_video_roundtrip(tmp_path):
    path = write_synthetic_video(
        tmp_path / "v.mp4", num_frames=6, size=(32, 48), fps=5, seed=4, masks_dir=tmp_path / "m"
    )
    with open_frames(path) as src:
        assert (src.num_frames, src.size, src.fps) == (6, (32, 48), 5.0)
        frames = np.stack(list(src))
    clip = synthetic_clip(4, 6, (32, 48))
    assert np.abs(frames.astype(np.float32) - clip.frames).mean() < 12
    assert np.array_equal(read_mask(tmp_path / "m" / "00005.png"), clip.masks[5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "v.mp4"]  # no temp file left
    with pytest.raises(RecvosError, match="even"):
        write_synthetic_video(tmp_path / "odd.mp4", size=(33, 48))
