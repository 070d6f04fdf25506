"""Dataset readers on small fake trees (DAVIS-2016/2017, YouTube-VOS, generic) and on shared DAVIS-2016."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from recvos.data.datasets import (
    DAVIS2016,
    DAVIS2017,
    FolderDataset,
    VideoSequence,
    YouTubeVOS,
    open_dataset,
)
from recvos.data.masks import write_mask
from recvos.data.synthetic import synthetic_clip, video_seed, write_synthetic_dataset
from recvos.errors import RecvosError

H, W = 8, 12


def _frame(path, size=(H, W), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


def _ids(*objs, size=(H, W)):
    """An id map with object k filling row block k (so ids never overlap)."""
    a = np.zeros(size, np.int64)
    for k in objs:
        a[k % size[0], :] = k
    return a


def _davis2017_tree(root, res="480p", seqs=None):
    """seq 'a': 5 frames, ids 1, 2 from frame 0, id 3 from frame 3, a void (255) row; seq 'b': 3 frames."""
    seqs = seqs or {"a": 5, "b": 3}
    for seq, n in seqs.items():
        for t in range(n):
            _frame(root / "JPEGImages" / res / seq / f"{t:05d}.jpg", value=t)
            ids = _ids(1, 2, 3) if t >= 3 else _ids(1, 2)
            ids[7, :] = 255
            write_mask(root / "Annotations" / res / seq / f"{t:05d}.png", ids)
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("b\n")
    (sets / "val.txt").write_text("a\n")
    return root


def test_davis2017_objects_and_later_appearance(tmp_path):
    ds = DAVIS2017(_davis2017_tree(tmp_path), split="val")
    assert ds.names == ["a"] and len(ds) == 1
    seq = ds["a"]
    assert seq is ds[0]
    assert isinstance(seq, VideoSequence)
    assert seq.object_ids == [1, 2, 3]  # 255 is void, not an object
    assert seq.first_frame == {1: 0, 2: 0, 3: 3}
    assert seq.annotated_indices == [0, 1, 2, 3, 4]
    assert seq.frame_size == (H, W) == seq.mask_size
    assert seq.load_frame(2).shape == (H, W, 3) and seq.load_frame(2).dtype == np.uint8
    assert np.array_equal(seq.load_mask(3)[:7], _ids(1, 2, 3)[:7])
    assert [f.shape for f in seq.frame_source()] == [(H, W, 3)] * 5
    assert DAVIS2017(tmp_path, split="train").names == ["b"]


def test_davis2017_bad_split_and_missing_folders(tmp_path):
    _davis2017_tree(tmp_path)
    with pytest.raises(RecvosError, match=r"unknown split 'test'.*valid splits: train, val"):
        DAVIS2017(tmp_path, split="test")
    with pytest.raises(RecvosError, match="2019.*2017"):
        DAVIS2017(tmp_path, split="val", year="2019")
    with pytest.raises(RecvosError, match="not found"):
        DAVIS2017(tmp_path / "nowhere")
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("a\nghost\n")
    with pytest.raises(RecvosError, match=r"JPEGImages/480p/ghost"):
        DAVIS2017(tmp_path, split="val")


def test_resolution_folders_detected_and_overridable(tmp_path):
    _davis2017_tree(tmp_path, res="Full-Resolution")
    ds = DAVIS2017(tmp_path, split="val")
    assert ds.frames_dir.name == "Full-Resolution" and ds.masks_dir.name == "Full-Resolution"
    # a 480p copy is preferred when present; an override picks another
    for t in range(5):
        _frame(tmp_path / "JPEGImages" / "480p" / "a" / f"{t:05d}.jpg")
    ds = DAVIS2017(tmp_path, split="val")
    assert ds.frames_dir.name == "480p" and ds.masks_dir.name == "Full-Resolution"
    assert DAVIS2017(tmp_path, split="val", frames_res="Full-Resolution").frames_dir.name == "Full-Resolution"
    with pytest.raises(RecvosError, match="1080p"):
        DAVIS2017(tmp_path, split="val", masks_res="1080p")


def test_flat_layout_without_resolution_folder(tmp_path):
    _davis2017_tree(tmp_path, res="")
    seq = open_dataset("davis2017", tmp_path, "val")["a"]
    assert seq.object_ids == [1, 2, 3] and len(seq) == 5


def test_davis2016_binary_masks_and_different_mask_resolution(tmp_path):
    for seq in ("bear", "cows"):
        for t in range(4):
            _frame(tmp_path / "JPEGImages" / "240p" / seq / f"{t:05d}.jpg", size=(6, 10))
            m = np.zeros((12, 20), np.uint8)
            m[3:9, 4 + t : 10 + t] = 255
            mdir = tmp_path / "Annotations" / "480p" / seq
            mdir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(m, mode="L").save(mdir / f"{t:05d}.png")
    (tmp_path / "ImageSets" / "2016").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2016" / "train.txt").write_text("bear\n")
    (tmp_path / "ImageSets" / "2016" / "val.txt").write_text("cows\n")
    ds = DAVIS2016(tmp_path, split="train")
    seq = ds["bear"]
    assert seq.object_ids == [1] and seq.first_frame == {1: 0}
    assert seq.frame_size == (6, 10) and seq.mask_size == (12, 20)
    m = seq.load_mask(2)
    assert m.shape == (12, 20) and set(np.unique(m).tolist()) == {0, 1} and m.sum() == 36
    with pytest.raises(RecvosError, match="valid splits: train, val"):
        DAVIS2016(tmp_path, split="trainval")


def test_mask_size_mismatch(tmp_path, caplog):
    _davis2017_tree(tmp_path, seqs={"a": 3})
    mdir = tmp_path / "Annotations" / "480p" / "a"
    write_mask(mdir / "00001.png", np.ones((H, W - 1), np.int64))  # off by one pixel: resized, warned
    write_mask(mdir / "00002.png", np.ones((H // 2, W), np.int64))  # wrong size: error
    seq = DAVIS2017(tmp_path, split="val")["a"]
    with caplog.at_level(logging.WARNING):
        assert seq.load_mask(1).shape == (H, W)
    assert "00001.png" in caplog.text
    with pytest.raises(RecvosError, match=r"00002\.png.*4x12"):
        seq.load_mask(2)


def _ytvos_tree(root):
    """valid: v1 has 15 frames, object 1 from frame 0, object 2 from frame 10; masks only on first appearance.
    train: v1 has annotations every 5th frame."""
    meta = {
        "videos": {
            "v1": {
                "objects": {
                    "1": {"category": "cat", "frames": ["00000", "00005", "00010"]},
                    "2": {"category": "dog", "frames": ["00010"]},
                }
            }
        }
    }
    for split in ("valid", "train"):
        for t in range(15):
            _frame(root / f"{split}_all_frames" / "JPEGImages" / "v1" / f"{t:05d}.jpg")
            if t % 5 == 0:
                _frame(root / split / "JPEGImages" / "v1" / f"{t:05d}.jpg")
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / "meta.json").write_text(json.dumps(meta))
    write_mask(root / "valid" / "Annotations" / "v1" / "00000.png", _ids(1))
    write_mask(root / "valid" / "Annotations" / "v1" / "00010.png", _ids(2))
    for t in (0, 5, 10):
        write_mask(root / "train" / "Annotations" / "v1" / f"{t:05d}.png", _ids(1, 2) if t == 10 else _ids(1))
    return root


def test_youtube_vos_valid_all_frames(tmp_path):
    _ytvos_tree(tmp_path)
    seq = YouTubeVOS(tmp_path, split="valid_all_frames")["v1"]
    assert len(seq) == 15
    assert seq.object_ids == [1, 2] and seq.first_frame == {1: 0, 2: 10}
    assert seq.annotated_indices == [0, 10]
    assert seq.load_mask(3) is None
    assert np.array_equal(seq.load_mask(10), _ids(2))


def test_youtube_vos_train_every_fifth_frame(tmp_path):
    _ytvos_tree(tmp_path)
    seq = open_dataset("youtube-vos", tmp_path, "train")[0]
    assert seq.frame_names == ["00000", "00005", "00010"]
    assert seq.annotated_indices == [0, 1, 2]
    assert seq.first_frame == {1: 0, 2: 2}


def test_youtube_vos_without_meta_scans_masks(tmp_path):
    _ytvos_tree(tmp_path)
    (tmp_path / "valid" / "meta.json").unlink()
    seq = YouTubeVOS(tmp_path, split="valid_all_frames")["v1"]
    assert seq.object_ids == [1, 2] and seq.first_frame == {1: 0, 2: 10}


def test_youtube_vos_bad_split_and_missing(tmp_path):
    _ytvos_tree(tmp_path)
    with pytest.raises(RecvosError, match=r"unknown YouTube-VOS split 'val'.*valid splits: train, valid"):
        YouTubeVOS(tmp_path, split="val")
    with pytest.raises(RecvosError, match=r"test/JPEGImages"):
        YouTubeVOS(tmp_path, split="test")


def test_folder_dataset_reads_synthetic_tree(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", num_videos=3, seed=5, num_frames=4, size=(32, 48))
    ds = FolderDataset(root)
    assert ds.names == ["synthetic000", "synthetic001", "synthetic002"]
    seq = ds[1]
    assert seq.object_ids == [1, 2] and all(v == 0 for v in seq.first_frame.values())
    assert seq.annotated_indices == [0, 1, 2, 3]
    assert seq.load_frame(0).shape == (32, 48, 3)
    # the same tree through DAVIS-2017 with its ImageSets and through a named split
    assert open_dataset("davis2017", root, "train").names == ["synthetic000", "synthetic001"]
    assert open_dataset("folder", root, "val").names == ["synthetic002"]
    with pytest.raises(RecvosError, match="valid splits: train, val"):
        FolderDataset(root, split="test")


def test_folder_dataset_without_annotations(tmp_path):
    for t in range(3):
        _frame(tmp_path / "JPEGImages" / "s" / f"{t}.png")
    seq = FolderDataset(tmp_path)["s"]
    assert seq.annotated_indices == [] and seq.object_ids == [] and seq.load_mask(0) is None


def test_open_dataset_unknown_kind(tmp_path):
    with pytest.raises(RecvosError, match="davis2016, davis2017, youtube-vos, folder"):
        open_dataset("kitti", tmp_path)
    with pytest.raises(KeyError):
        FolderDataset(write_synthetic_dataset(tmp_path / "s", num_videos=1, num_frames=2, size=(16, 16)))[
            "zzz"
        ]


def test_synthetic_tree_matches_generator(tmp_path):
    root = write_synthetic_dataset(tmp_path, num_videos=1, seed=2, num_frames=3, size=(24, 32))
    seq = FolderDataset(root)[0]
    clip = synthetic_clip(video_seed(2, 0), 3, (24, 32))
    for t in range(3):
        assert np.array_equal(seq.load_frame(t), clip.frames[t])  # PNG frames are lossless
        assert np.array_equal(seq.load_mask(t), clip.masks[t])


@pytest.mark.shared
def test_shared_davis2016(davis2016_root):
    train = DAVIS2016(davis2016_root, "train")
    val = open_dataset("davis2016", davis2016_root)
    assert len(train) == 30 and len(val) == 20 and not set(train.names) & set(val.names)
    seq = train["bear"]
    assert len(seq) == 82 and seq.annotated_indices == list(range(82))
    assert seq.frame_size == (240, 427) and seq.mask_size == (480, 854)
    assert seq.object_ids == [1] and seq.first_frame == {1: 0}
    f, m = seq.load_frame(40), seq.load_mask(40)
    assert f.shape == (240, 427, 3) and m.shape == (480, 854)
    raw = np.asarray(Image.open(seq.mask_paths[40]))  # the 0/255 greyscale file, decoded independently
    assert set(np.unique(m).tolist()) == {0, 1} and m.sum() == (raw == 255).sum() > 0.01 * m.size
