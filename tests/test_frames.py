"""Frame sources: natural order, lazy iteration, sizes, video decoding, and bad input."""

from __future__ import annotations

import types

import numpy as np
import pytest
from PIL import Image

from recvos.data.frames import FolderFrames, FrameSource, VideoFrames, natural_key, open_frames
from recvos.data.synthetic import synthetic_clip, write_synthetic_video
from recvos.errors import RecvosError


def _write_frames(folder, names, size=(6, 8)):
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        a = np.full((*size, 3), 10 * (k + 1), np.uint8)
        Image.fromarray(a).save(folder / name)


def test_natural_key_orders_numbers():
    names = ["10.jpg", "2.jpg", "1.jpg", "frame_11.png", "frame_9.png"]
    assert sorted(names, key=natural_key) == ["1.jpg", "2.jpg", "10.jpg", "frame_9.png", "frame_11.png"]


def test_folder_frames_natural_order_and_lazy(tmp_path):
    # written in order 1, 2, 10 with values 10, 20, 30; lexical order would put 10 before 2
    _write_frames(tmp_path / "seq", ["1.png", "2.png", "10.png"])
    (tmp_path / "seq" / "notes.txt").write_text("not a frame")
    src = FolderFrames(tmp_path / "seq")
    assert isinstance(src, FrameSource)
    assert src.num_frames == 3 and src.size == (6, 8) and src.fps is None
    assert src.frame_names == ["1", "2", "10"]
    it = iter(src)
    assert isinstance(it, types.GeneratorType)
    frames = list(it)
    assert [int(f[0, 0, 0]) for f in frames] == [10, 20, 30]
    assert all(f.dtype == np.uint8 and f.shape == (6, 8, 3) for f in frames)


def test_folder_frames_jpeg_and_grey_to_rgb(tmp_path):
    d = tmp_path / "seq"
    d.mkdir()
    Image.fromarray(np.full((5, 7, 3), 100, np.uint8)).save(d / "00000.jpg", quality=95)
    Image.fromarray(np.full((5, 7), 50, np.uint8), mode="L").save(d / "00001.png")
    with open_frames(d) as src:
        frames = list(src)
    assert frames[0].shape == (5, 7, 3) and abs(int(frames[0][2, 3, 1]) - 100) <= 2
    assert frames[1].shape == (5, 7, 3) and frames[1][0, 0].tolist() == [50, 50, 50]


def test_folder_frames_bad_input(tmp_path):
    with pytest.raises(RecvosError, match="missing.*not found"):
        FolderFrames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecvosError, match="empty.*no frames"):
        FolderFrames(tmp_path / "empty")
    # a corrupt frame in the middle: earlier frames are yielded, then the error names the file
    _write_frames(tmp_path / "seq", ["00000.png", "00001.png", "00002.png"])
    (tmp_path / "seq" / "00001.png").write_bytes(b"not a png")
    got = []
    with pytest.raises(RecvosError, match="00001.png"):
        for f in FolderFrames(tmp_path / "seq"):
            got.append(f)
    assert len(got) == 1
    # a frame of another size
    _write_frames(tmp_path / "mixed", ["00000.png"])
    _write_frames(tmp_path / "mixed", ["00001.png"], size=(4, 4))
    with pytest.raises(RecvosError, match="00001.png.*frame 1 is 4x4"):
        list(FolderFrames(tmp_path / "mixed"))


def test_open_frames_dispatch_and_errors(tmp_path):
    _write_frames(tmp_path / "seq", ["a.png"])
    assert isinstance(open_frames(tmp_path / "seq"), FolderFrames)
    with pytest.raises(RecvosError, match="single image"):
        open_frames(tmp_path / "seq" / "a.png")
    with pytest.raises(RecvosError, match="nothing.mp4"):
        open_frames(tmp_path / "nothing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(RecvosError, match="junk.mp4"):
        open_frames(tmp_path / "junk.mp4")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("vid") / "clip.mp4"
    return write_synthetic_video(path, num_frames=12, size=(48, 64), fps=8, seed=3)


def test_video_frames_metadata_and_content(video):
    src = open_frames(video)
    assert isinstance(src, VideoFrames)
    assert src.num_frames == 12 and src.size == (48, 64) and src.fps == pytest.approx(8.0)
    assert src.frame_names[:2] == ["00000", "00001"] and len(src.frame_names) == 12
    frames = list(src)
    ref = synthetic_clip(3, 12, (48, 64)).frames
    assert len(frames) == 12 and frames[0].dtype == np.uint8 and frames[0].shape == (48, 64, 3)
    err = np.abs(np.stack(frames).astype(np.float32) - ref).mean()
    assert err < 12, err  # lossy H.264 + yuv420p, but the same pictures
    assert len(list(src)) == 12  # iterating again starts from the first frame
    src.close()


def test_truncated_video_names_file_and_frame(video, tmp_path):
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.85)])
    src = open_frames(cut)  # moov atom first (faststart): the header still opens
    got = []
    with pytest.raises(RecvosError, match=r"cut\.mp4.*truncated.*frame (\d+)") as exc:
        for f in src:
            got.append(f)
    assert 0 < len(got) < 12
    assert f"frame {len(got)}" in str(exc.value)
