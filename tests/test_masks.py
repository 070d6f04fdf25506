"""Mask I/O: palette / L / binary / 16-bit reading, ambiguous input, atomic palette writing, one-hot."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from recvos.data.masks import (
    DAVIS_PALETTE,
    first_appearance,
    ids_to_onehot,
    object_ids,
    onehot_to_ids,
    present_ids,
    read_ids,
    read_mask,
    resize_ids,
    write_mask,
)
from recvos.errors import RecvosError


def _ids(h: int = 12, w: int = 16) -> np.ndarray:
    a = np.zeros((h, w), np.int64)
    a[2:6, 3:9] = 1
    a[7:11, 1:5] = 2
    a[8:12, 10:16] = 7
    return a


def test_davis_palette_values():
    assert DAVIS_PALETTE.shape == (256, 3) and DAVIS_PALETTE.dtype == np.uint8
    assert DAVIS_PALETTE[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert DAVIS_PALETTE[255].tolist() == [224, 224, 192]  # the DAVIS void colour
    assert len({tuple(c) for c in DAVIS_PALETTE.tolist()}) == 256


def test_write_read_roundtrip_palette(tmp_path):
    ids = _ids()
    p = tmp_path / "sub" / "00000.png"
    write_mask(p, ids)
    img = Image.open(p)
    assert img.mode == "P"
    assert np.array_equal(np.asarray(img.getpalette()[:768], np.uint8).reshape(256, 3), DAVIS_PALETTE)
    out = read_mask(p)
    assert out.dtype == np.int64 and np.array_equal(out, ids)
    assert [f.name for f in p.parent.iterdir()] == ["00000.png"]  # no temp file left behind


def test_l_values_are_ids(tmp_path):
    ids = _ids()
    Image.fromarray(ids.astype(np.uint8), mode="L").save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), ids)


def test_binary_0_255_becomes_id_1(tmp_path):
    a = np.zeros((10, 10), np.uint8)
    a[2:5, 2:5] = 255
    Image.fromarray(a, mode="L").save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert set(np.unique(out).tolist()) == {0, 1} and out.sum() == 9


def test_mode_1_is_binary(tmp_path):
    a = np.zeros((8, 8), bool)
    a[1:3, 1:4] = True
    Image.fromarray(a).convert("1").save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png")
    assert np.array_equal(out, a.astype(np.int64))


def test_16bit_ids(tmp_path):
    a = np.zeros((6, 6), np.uint16)
    a[1:3, 1:3] = 300
    a[4:, 4:] = 2
    Image.fromarray(a).save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode.startswith("I")
    out = read_mask(tmp_path / "m.png")
    assert out[1, 1] == 300 and out[5, 5] == 2 and out[0, 0] == 0


def test_rgb_mask_rejected_unless_convert(tmp_path):
    ids = _ids()
    rgb = DAVIS_PALETTE[ids]
    rgb[0, 0] = (10, 200, 30)  # a colour outside the DAVIS palette
    p = tmp_path / "rgb.png"
    Image.fromarray(rgb, mode="RGB").save(p)
    with pytest.raises(RecvosError, match=r"rgb\.png.*convert=True"):
        read_mask(p)
    out = read_mask(p, convert=True)
    expect = ids.copy()
    expect[0, 0] = 3  # first id not taken by a palette colour (1, 2, 7 are)
    assert np.array_equal(out, expect)


def test_rgb_convert_non_palette_colours_sorted(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0] = (200, 10, 10)
    rgb[3] = (5, 5, 250)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png", convert=True)
    # black -> 0; others by sorted colour code: (5,5,250) < (200,10,10)
    assert out[1, 1] == 0 and out[3, 0] == 1 and out[0, 0] == 2


def test_antialiased_grey_rejected_unless_convert(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    a[8:24, 8:24] = 255
    a[7, 8:24] = 128
    a[24, 8:24] = 60
    a[8:24, 7] = 200
    p = tmp_path / "aa.png"
    Image.fromarray(a, mode="L").save(p)
    with pytest.raises(RecvosError, match=r"aa\.png.*grey level.*convert=True"):
        read_mask(p)
    out = read_mask(p, convert=True)
    assert np.array_equal(out, (a >= 128).astype(np.int64))


def test_small_ids_with_void_255_are_ids(tmp_path):
    a = _ids().astype(np.uint8)
    a[0, :] = 255
    Image.fromarray(a, mode="L").save(tmp_path / "m.png")
    assert np.array_equal(read_mask(tmp_path / "m.png"), a.astype(np.int64))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(RecvosError, match="nope.png.*not found"):
        read_mask(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(RecvosError, match="bad.png"):
        read_mask(bad)


@pytest.mark.parametrize(
    ("ids", "match"),
    [
        (np.full((4, 4), 256), "0..255"),
        (np.full((4, 4), -1), "0..255"),
        (np.full((4, 4), 0.5), "non-integer"),
        (np.zeros((2, 4, 4), np.int64), "2-D"),
    ],
)
def test_write_mask_rejects_bad_ids(tmp_path, ids, match):
    p = tmp_path / "out.png"
    with pytest.raises(RecvosError, match=match):
        write_mask(p, ids)
    assert not p.exists() and list(tmp_path.iterdir()) == []


def test_write_mask_accepts_bool_and_integral_float(tmp_path):
    write_mask(tmp_path / "b.png", np.eye(4, dtype=bool))
    assert np.array_equal(read_mask(tmp_path / "b.png"), np.eye(4, dtype=np.int64))
    write_mask(tmp_path / "f.png", np.eye(4) * 3.0)
    assert np.array_equal(read_mask(tmp_path / "f.png"), np.eye(4, dtype=np.int64) * 3)


def test_onehot_roundtrip_non_contiguous_ids():
    ids = _ids()
    obj = [1, 2, 7]
    oh = ids_to_onehot(ids, obj)
    assert oh.shape == (3, *ids.shape) and oh.dtype == bool
    assert np.array_equal(oh[2], ids == 7)
    assert np.array_equal(onehot_to_ids(oh.astype(np.float32), obj), ids)


def test_onehot_to_ids_argmax_and_threshold():
    probs = np.array([[[0.9, 0.3, 0.2]], [[0.6, 0.7, 0.1]]], np.float32)  # [O=2, H=1, W=3]
    out = onehot_to_ids(probs, [4, 9])
    assert out.tolist() == [[4, 9, 0]]
    assert onehot_to_ids(probs, [4, 9], threshold=0.8).tolist() == [[4, 0, 0]]
    assert onehot_to_ids(np.zeros((0, 2, 2)), []).tolist() == [[0, 0], [0, 0]]


def test_read_ids_equals_read_mask(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, (17, 23)).astype(np.uint8)
    cases = {
        "binary_l.png": ids.astype(bool).astype(np.uint8) * 255,  # DAVIS-2016 style
        "zeros_l.png": np.zeros((17, 23), np.uint8),
        "ids_l.png": ids,
        "full_l.png": np.full((17, 23), 255, np.uint8),
    }
    for name, a in cases.items():
        assert cv2.imwrite(str(tmp_path / name), a)
    write_mask(tmp_path / "palette.png", ids)
    Image.fromarray(ids.astype(np.uint16) * 300).save(tmp_path / "i16.png")
    for p in sorted(tmp_path.iterdir()):
        got = read_ids(p)
        assert np.array_equal(got, read_mask(p)), p.name
        assert got.dtype == (np.int64 if p.name == "i16.png" else np.uint8), p.name  # ids > 255 stay int64
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(RecvosError, match="broken.png"):
        read_ids(tmp_path / "broken.png")


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.uint16])
def test_present_and_object_ids(dtype):
    a = np.zeros((4, 5), dtype)
    a[0, 0], a[1, 1], a[2, 2] = 3, 255, 17
    assert present_ids(a) == [3, 17, 255]  # void included: predictions may use 255 as an id
    assert object_ids(a) == [3, 17]  # void excluded: never a ground-truth object
    assert present_ids(np.zeros((2, 2), dtype)) == [] and present_ids(np.zeros((0,), dtype)) == []
    if dtype != np.uint8:
        a[3, 3] = 300 if dtype == np.int64 else 65535
        assert present_ids(a)[-1] == int(a[3, 3])
    assert present_ids(np.array([[-2, 0, 5]])) == [-2, 5]


def test_first_appearance_skips_unannotated_frames():
    a = np.zeros((2, 2), np.int64)
    b = a.copy()
    b[0, 0], b[1, 1] = 4, 255
    c = b.copy()
    c[0, 1] = 2
    assert first_appearance([a, None, b, c]) == {2: 3, 4: 2}
    assert list(first_appearance([c, b])) == [2, 4]  # sorted by id
    assert first_appearance([]) == {}


def test_resize_ids_nearest():
    ids = np.array([[1, 2], [3, 300]])
    out = resize_ids(ids, (4, 4))
    assert out.dtype == np.int32
    assert out.tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 300, 300], [3, 3, 300, 300]]


def test_onehot_to_ids_same_for_torch_tensors():
    import torch

    rng = np.random.default_rng(0)
    p = rng.random((3, 7, 9)).astype(np.float32)
    for thr in (0.5, 0.9):
        for objects in ([4, 9, 2], [7]):  # one object takes a shortcut (a threshold)
            q = p[: len(objects)]
            got = onehot_to_ids(torch.from_numpy(q), objects, thr)
            np.testing.assert_array_equal(got, onehot_to_ids(q, objects, thr))
            assert got.dtype == np.int64
    assert onehot_to_ids(torch.from_numpy(np.full((1, 2, 2), 0.5, np.float32)), [3]).tolist() == [
        [3, 3],
        [3, 3],
    ]
    assert onehot_to_ids(torch.zeros(0, 2, 3), []).shape == (2, 3)
