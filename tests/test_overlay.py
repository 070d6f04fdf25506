"""Overlay drawing and the streamed H.264 writer."""

from __future__ import annotations

import av
import numpy as np
import pytest

from recvos.data.masks import DAVIS_PALETTE
from recvos.errors import RecvosError
from recvos.inference.overlay import OverlayWriter, blend


def test_blend_colours_objects_only():
    frame = np.full((40, 60, 3), 100, np.uint8)
    ids = np.zeros((40, 60), np.int64)
    ids[5:15, 5:15] = 1
    ids[20:38, 30:58] = 2
    out = blend(frame, ids, alpha=0.5, draw_ids=False)
    assert out.shape == frame.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[ids == 0][:10], frame[ids == 0][:10])
    expected = np.round(100 * 0.5 + DAVIS_PALETTE[2] * 0.5)
    np.testing.assert_allclose(out[28, 40], expected, atol=1)  # interior of object 2
    with_ids = blend(frame, ids, alpha=0.5, draw_ids=True)
    assert (with_ids != out).any()  # the ids are drawn


def test_blend_resizes_ids_to_the_frame():
    frame = np.zeros((30, 40, 3), np.uint8)
    ids = np.ones((60, 80), np.int64)
    assert blend(frame, ids).shape == (30, 40, 3)


@pytest.mark.parametrize("size", [(48, 64), (47, 63)])
def test_overlay_video_decodes_back(tmp_path, size):
    rng = np.random.default_rng(0)
    path = tmp_path / "ov.mp4"
    with OverlayWriter(path, fps=12) as w:
        for t in range(7):
            frame = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            ids = np.zeros(size, np.int64)
            ids[t : t + 10, t : t + 20] = 3
            w.write(frame, ids)
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert c.streams.video[0].codec_context.name == "h264"
    assert len(frames) == 7
    assert frames[0].shape[:2] == (size[0] + size[0] % 2, size[1] + size[1] % 2)


def test_overlay_writer_rejects_bad_paths(tmp_path):
    with pytest.raises(RecvosError, match="mp4"):
        OverlayWriter(tmp_path / "x.gif")
    with pytest.raises(RecvosError, match="does not exist"):
        OverlayWriter(tmp_path / "missing" / "x.mp4")


def test_blend_takes_any_integer_id_map():
    """uint8 id maps (as many tools produce) blend like int64 ones (numpy 2 refused ``uint8 % 256``)."""
    from recvos.inference.overlay import blend

    frame = np.zeros((8, 8, 3), np.uint8)
    ids = np.zeros((8, 8), np.uint8)
    ids[2:6, 2:6] = 3
    np.testing.assert_array_equal(blend(frame, ids), blend(frame, ids.astype(np.int64)))
