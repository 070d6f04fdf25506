"""Pseudo-videos from still annotated images: motion, occlusion-consistent ids, distractors, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from recvos.data.clips import ArrayVideo, ClipDataset, ClipKey, PseudoOptions, SourceMix
from recvos.data.pseudo import StillImage, pseudo_clip, stills_from_video

RED = np.array([255, 0, 0], np.uint8)


def red_square_still(size=(64, 96)) -> StillImage:
    h, w = size
    frame = np.full((h, w, 3), 128, np.uint8)
    ids = np.zeros((h, w), np.uint8)
    frame[20:40, 30:50] = RED
    ids[20:40, 30:50] = 1
    return StillImage(frame, ids, "red")


def test_objects_move_and_ids_are_consecutive():
    frames, ids = pseudo_clip([red_square_still()], np.random.default_rng(3), 6, max_pasted=2, distractor=0.0)
    assert frames.shape == (6, 64, 96, 3) and ids.shape == (6, 64, 96)
    present = sorted(set(np.unique(ids)) - {0})
    assert present == list(range(1, len(present) + 1)) and len(present) >= 2  # background's object + pasted
    assert any(not np.array_equal(ids[0] == 1, ids[t] == 1) for t in range(1, 6))  # it moves
    again = pseudo_clip([red_square_still()], np.random.default_rng(3), 6, max_pasted=2, distractor=0.0)
    assert np.array_equal(again[1], ids) and np.array_equal(again[0], frames)


@pytest.mark.parametrize("distractor", [0.0, 1.0])
def test_distractors_are_unlabelled_copies(distractor):
    """Red pixels far inside red regions are labelled unless a distractor copy was pasted."""
    unlabelled = []
    for seed in range(6):
        frames, ids = pseudo_clip(
            [red_square_still()], np.random.default_rng(seed), 3, max_pasted=1, distractor=distractor
        )
        red = (frames[0] == RED).all(-1)
        core = red & np.roll(red, 2, 0) & np.roll(red, -2, 0) & np.roll(red, 2, 1) & np.roll(red, -2, 1)
        unlabelled.append(int((core & (ids[0] == 0)).sum()))
    assert (max(unlabelled) == 0) if distractor == 0.0 else (max(unlabelled) > 0)


def test_clip_dataset_pseudo_source_from_videos_and_extra_stills():
    frames = np.full((10, 48, 64, 3), 90, np.uint8)
    masks = np.zeros((10, 48, 64), np.int64)
    frames[:, 10:30, 10:30] = (200, 50, 50)
    masks[:, 10:30, 10:30] = 1
    video = ArrayVideo("v", frames, masks)
    assert len(stills_from_video(video, every=5)) == 2
    ds = ClipDataset(
        [video],
        size=(48, 64),
        num_frames=4,
        max_objects=3,
        mix=SourceMix(real=0, pseudo=1),
        pseudo=PseudoOptions(every=5),
        stills=[red_square_still((48, 64))],
        length=8,
    )
    item = ds[ClipKey(0, 4)]
    assert item["frames"].shape == (4, 3, 48, 64) and item["present"].any() and item["annotated"].all()
    assert len(ds.stills()) == 3


def test_train_dataset_passes_the_configured_pseudo_options_and_extra_stills(tmp_path):
    """data.pseudo (every, roots, ...) must reach the clip dataset: the extra roots' annotated frames become
    stills next to every k-th frame of the training videos."""
    from recvos.data.synthetic import write_synthetic_dataset
    from recvos.training.config import load_config
    from recvos.training.data import train_dataset

    train_root = write_synthetic_dataset(
        tmp_path / "train", num_videos=2, seed=1, num_frames=6, size=(32, 48)
    )
    extra_root = write_synthetic_dataset(
        tmp_path / "extra", num_videos=3, seed=9, num_frames=2, size=(32, 48)
    )
    cfg = load_config(
        None,
        [
            "data.kind=folder",
            f"data.root={train_root}",
            "data.split=null",
            "data.size=[32, 48]",
            "data.num_frames=3",
            "data.max_objects=2",
            "data.mix.real=0",
            "data.mix.pseudo=1",
            "data.pseudo.every=3",
            "data.pseudo.max_pasted=1",
            f"data.pseudo.roots=[{extra_root}]",
        ],
    )
    ds = train_dataset(cfg)
    assert ds.pseudo_opts.every == 3 and ds.pseudo_opts.max_pasted == 1
    # 2 videos x frames {0, 3} + the 3 x 2 annotated frames of the extra root
    assert len(ds.stills()) == 2 * 2 + 3 * 2
    item = ds[ClipKey(0, 3)]
    assert item["frames"].shape == (3, 3, 32, 48) and item["present"].any()
