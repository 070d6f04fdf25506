"""`recvos segment` end to end on small synthetic videos (and the real bear clip when ../shared is there)."""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
import torch
from PIL import Image

from recvos.cli.main import main
from recvos.data.masks import read_mask, write_mask
from recvos.data.synthetic import synthetic_clip, write_synthetic_video
from recvos.models.factory import build_model
from recvos.models.loading import save_model

N = 6


@pytest.fixture(scope="module")
def zckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-zero.pt"
    save_model(build_model("rvos-s", mode="zero-shot", hidden_size=16, max_objects=2), path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    path = write_synthetic_video(d / "clip.mp4", num_frames=N, size=(48, 64), masks_dir=d / "gt")
    return path, d / "gt"


def run(*argv) -> int:
    return main(["segment", *map(str, argv), "--no-progress"])


def test_segment_video_with_overlay(tmp_path, video, ckpt, capsys):
    path, gt = video
    out = tmp_path / "out"
    assert (
        run(path, "--mask", gt / "00000.png", "-o", out, "--model", ckpt, "--overlay", tmp_path / "ov.mp4")
        == 0
    )
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(N)]
    for p in pngs:
        with Image.open(p) as im:
            assert im.mode == "P" and im.size == (64, 48)
    np.testing.assert_array_equal(read_mask(pngs[0]), read_mask(gt / "00000.png"))
    with av.open(str(tmp_path / "ov.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == N
    assert "frames/s" in capsys.readouterr().out


def test_segment_folder_names_outputs_after_frames(tmp_path, ckpt):
    clip = synthetic_clip(1, num_frames=4, size=(40, 56), num_objects=2)
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, f in enumerate(clip.frames):
        Image.fromarray(f).save(frames / f"img_{t * 5}.png")
    write_mask(tmp_path / "first.png", clip.masks[0])
    out = tmp_path / "out"
    assert run(frames, "--mask", tmp_path / "first.png", "-o", out, "--model", ckpt, "--max-size", 32) == 0
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(f"img_{t * 5}" for t in range(4))
    assert all(read_mask(p).shape == (40, 56) for p in out.glob("*.png"))


def test_masks_dir_adds_objects_later(tmp_path, video, ckpt):
    path, gt = video
    masks = tmp_path / "masks"
    masks.mkdir()
    first = read_mask(gt / "00000.png")
    write_mask(masks / "00000.png", (first == 1).astype(np.int64))
    later = read_mask(gt / "00003.png")
    write_mask(masks / "00003.png", np.where(later == 2, 5, 0))
    out = tmp_path / "out"
    assert run(path, "--masks", masks, "-o", out, "--model", ckpt) == 0
    assert 5 not in np.unique(read_mask(out / "00002.png"))
    np.testing.assert_array_equal(read_mask(out / "00003.png") == 5, later == 2)


def test_zero_shot(tmp_path, video, zckpt):
    path, _ = video
    out = tmp_path / "out"
    assert run(path, "--zero-shot", "-o", out, "--model", zckpt, "--objectness-threshold", 0) == 0
    assert len(list(out.glob("*.png"))) == N


def test_existing_output_needs_overwrite(tmp_path, video, ckpt, capsys):
    path, gt = video
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert run(path, "--mask", gt / "00000.png", "-o", out, "--model", ckpt) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert run(path, "--mask", gt / "00000.png", "-o", out, "--model", ckpt, "--overwrite") == 0
    assert len(list(out.glob("*.png"))) == N


def test_bad_masks_are_one_line_errors(tmp_path, video, ckpt, capsys):
    path, gt = video
    empty = tmp_path / "empty.png"
    write_mask(empty, np.zeros((48, 64), np.int64))
    assert run(path, "--mask", empty, "-o", tmp_path / "a", "--model", ckpt) == 2
    assert "empty.png" in capsys.readouterr().err
    wrong = tmp_path / "wrong.png"
    write_mask(wrong, np.ones((64, 48), np.int64))
    assert run(path, "--mask", wrong, "-o", tmp_path / "b", "--model", ckpt) == 2
    err = capsys.readouterr().err
    assert "wrong.png" in err and "48x64" in err
    off = tmp_path / "off.png"  # one pixel narrower: resized with a warning
    write_mask(off, read_mask(gt / "00000.png")[:, :63])
    assert run(path, "--mask", off, "-o", tmp_path / "c", "--model", ckpt) == 0
    masks = tmp_path / "late"
    masks.mkdir()
    shutil.copy(gt / "00000.png", masks / "00000.png")
    shutil.copy(gt / "00000.png", masks / "00050.png")
    assert run(path, "--masks", masks, "-o", tmp_path / "d", "--model", ckpt) == 2
    assert "frame index 50 is beyond the video" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # nothing written for input errors


def test_truncated_video_keeps_written_masks(tmp_path, ckpt, capsys):
    path = write_synthetic_video(
        tmp_path / "long.mp4", num_frames=40, size=(48, 64), masks_dir=tmp_path / "gt"
    )
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    code = run(cut, "--mask", tmp_path / "gt" / "00000.png", "-o", out, "--model", ckpt)
    err = capsys.readouterr().err
    assert code == 2 and "cut.mp4" in err and "frame" in err
    written = len(list(out.glob("*.png")))
    assert 0 < written < 40


def test_unreadable_video(tmp_path, ckpt, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    write_mask(tmp_path / "m.png", np.ones((4, 4), np.int64))
    assert run(bad, "--mask", tmp_path / "m.png", "-o", tmp_path / "out", "--model", ckpt) == 2
    assert "bad.mp4" in capsys.readouterr().err


def test_checkpoint_of_another_architecture(tmp_path, video, capsys):
    path, gt = video
    a = build_model("rvos-t", hidden_size=16)
    ckpt = {"format": "recvos-model/1", "model_name": "s2s", "model_config": {}, "state_dict": a.state_dict()}
    torch.save(ckpt, tmp_path / "other.pt")
    assert (
        run(path, "--mask", gt / "00000.png", "-o", tmp_path / "out", "--model", tmp_path / "other.pt") == 2
    )
    err = capsys.readouterr().err
    assert "other.pt" in err and "s2s" in err


def test_needs_masks_or_zero_shot(tmp_path, video, ckpt, capsys):
    path, _ = video
    assert run(path, "-o", tmp_path / "out", "--model", ckpt) == 2
    assert "--zero-shot" in capsys.readouterr().err


def test_online_steps(tmp_path, video, ckpt, capsys):
    path, gt = video
    assert (
        run(path, "--mask", gt / "00000.png", "-o", tmp_path / "out", "--model", ckpt, "--online-steps", 1)
        == 0
    )
    assert "online learning" in capsys.readouterr().out


def test_flip_gives_the_masks_of_the_api_with_flip(tmp_path, video, ckpt):
    from recvos.inference.segmenter import load_model

    path, gt = video
    out = tmp_path / "out"
    assert run(path, "--mask", gt / "00000.png", "-o", out, "--model", ckpt, "--flip") == 0
    seg = load_model(ckpt, flip=True)
    state = seg.init_state(path)
    seg.add_mask(state, 0, gt / "00000.png")
    for t, _, ids in seg.propagate(state):
        np.testing.assert_array_equal(read_mask(out / f"{t:05d}.png"), ids)


@pytest.mark.shared
def test_real_bear_video(tmp_path, shared_data, ckpt):
    video = shared_data / "videos" / "cotracker_bear.mp4"
    mask = shared_data / "davis2016" / "Annotations" / "480p" / "bear" / "00000.png"
    if not video.is_file() or not mask.is_file():
        pytest.skip("cotracker_bear.mp4 or the bear annotation is missing")
    out = tmp_path / "out"
    assert run(video, "--mask", mask, "-o", out, "--model", ckpt, "--max-size", 64) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 82
    assert read_mask(pngs[-1]).shape == (480, 854)


def test_segment_from_a_box_and_clicks(tmp_path, video, ckpt):
    """--box (and --points) on frame K give object 1 there: the prompted frame's mask is the prompt's mask."""
    path, gt = video
    ids = read_mask(gt / "00002.png")
    ys, xs = np.nonzero(ids == 1)
    box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"
    out = tmp_path / "box"
    assert run(path, "--box", box, "--frame", 2, "-o", out, "--model", ckpt) == 0
    assert not read_mask(out / "00001.png").any()  # the object starts on its frame
    prompted = read_mask(out / "00002.png") == 1
    assert prompted.any() and not prompted[: ys.min()].any() and not prompted[ys.max() + 1 :].any()
    cy, cx = int(np.median(ys)), int(np.median(xs))
    assert run(path, "--points", f"{cx},{cy},+", "--box", box, "-o", tmp_path / "both", "--model", ckpt) == 0
    assert run(path, "--box", "10,10,10,40", "-o", tmp_path / "bad", "--model", ckpt) == 2  # zero-area box
    assert run(path, "--box", box, "--mask", gt / "00000.png", "-o", tmp_path / "two", "--model", ckpt) == 2


@pytest.mark.slow
@pytest.mark.shared
def test_real_mp4_from_a_box_with_the_shipped_models(tmp_path, shared_data):
    """The README's promise: `recvos segment video.mp4 --box ...` on a real mp4 with the shipped prompt head
    and one-shot default (bear; IoU of the box's mask and J over the video against the DAVIS annotation)."""
    from recvos.evaluation.metrics import jaccard

    video = shared_data / "videos" / "cotracker_bear.mp4"
    gt_dir = shared_data / "davis2016" / "Annotations" / "480p" / "bear"
    if not video.is_file() or not gt_dir.is_dir():
        pytest.skip("cotracker_bear.mp4 or the bear annotations are missing")
    ys, xs = np.nonzero(read_mask(gt_dir / "00000.png") > 0)
    box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}"
    out = tmp_path / "out"
    assert run(video, "--box", box, "-o", out) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 82
    gt = np.stack([read_mask(gt_dir / p.name) > 0 for p in pngs])
    j = jaccard(gt, np.stack([read_mask(p) > 0 for p in pngs]))
    assert j[0] > 0.85 and j[1:-1].mean() > 0.85, (j[0], j[1:-1].mean())
