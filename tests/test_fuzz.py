"""Property-based fuzzing (Hypothesis) of everything a user hands recvos: random bytes as PNG / JPEG / mp4 /
checkpoint / YAML, masks of random modes, sizes and id sets, predictions of random sizes for evaluate.

Property: a correct result, or a RecvosError whose message is one line naming the file; never another
exception, never a partial output. Derandomized (the same cases every run); ``EXAMPLES`` cases per property,
``len(PROPERTIES) * EXAMPLES`` per CI run (README, BENCHMARKS.md "Reliability").
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from recvos.data.frames import FolderFrames, open_frames, read_frame
from recvos.data.masks import read_mask, write_mask
from recvos.errors import RecvosError

EXAMPLES = 200
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
#: the properties below (test names), for the count stated in the README
PROPERTIES = (
    "test_random_bytes_as_a_mask",
    "test_random_bytes_as_a_frame",
    "test_random_bytes_as_a_video",
    "test_random_bytes_as_a_checkpoint",
    "test_random_yaml",
    "test_masks_of_random_modes_sizes_and_ids",
    "test_predictions_of_random_sizes",
)

PNG_HEAD = b"\x89PNG\r\n\x1a\n"
JPEG_HEAD = b"\xff\xd8\xff\xe0"
MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"


def user_error(e: RecvosError, path: Path) -> None:
    """The promise: one line, naming the file."""
    msg = str(e)
    assert "\n" not in msg, msg
    assert path.name in msg, msg
    event("RecvosError")


def fuzz_bytes(head: bytes):
    """Random bytes, half of them behind a valid file signature (so decoders get past the first check)."""
    return st.tuples(st.booleans(), st.binary(max_size=600)).map(lambda t: (head if t[0] else b"") + t[1])


@pytest.fixture(scope="module")
def work():
    with tempfile.TemporaryDirectory(prefix="recvos_fuzz_") as d:
        yield Path(d)


# ------------------------------------------------------------------------------------ random bytes
@FUZZ
@given(data=fuzz_bytes(PNG_HEAD), convert=st.booleans())
def test_random_bytes_as_a_mask(work, data, convert):
    path = work / "mask.png"
    path.write_bytes(data)
    try:
        ids = read_mask(path, convert=convert)
    except RecvosError as e:
        user_error(e, path)
        return
    assert ids.ndim == 2 and np.issubdtype(ids.dtype, np.integer)
    event("result")


@FUZZ
@given(data=st.one_of(fuzz_bytes(JPEG_HEAD), fuzz_bytes(PNG_HEAD)), suffix=st.sampled_from([".jpg", ".png"]))
def test_random_bytes_as_a_frame(work, data, suffix):
    folder = work / f"frames{suffix}"
    folder.mkdir(exist_ok=True)
    path = folder / f"00000{suffix}"
    path.write_bytes(data)
    try:
        frame = read_frame(path)
        frames = list(FolderFrames(folder))
    except RecvosError as e:
        user_error(e, path)
        return
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert len(frames) == 1
    event("result")


@FUZZ
@given(data=fuzz_bytes(MP4_HEAD), suffix=st.sampled_from([".mp4", ".webm", ".avi"]))
def test_random_bytes_as_a_video(work, data, suffix):
    path = work / f"video{suffix}"
    path.write_bytes(data)
    try:
        with open_frames(path) as src:
            frames = list(src)
    except RecvosError as e:
        user_error(e, path)
        return
    assert all(f.dtype == np.uint8 and f.ndim == 3 for f in frames)
    event("result")


@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    from recvos.models.factory import build_model
    from recvos.models.loading import model_to_checkpoint

    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save(model_to_checkpoint(build_model("rvos-t", hidden_size=8)), buf)
    return buf.getvalue()


@FUZZ
@given(
    kind=st.sampled_from(["random", "truncated", "flipped"]),
    data=st.binary(max_size=400),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_random_bytes_as_a_checkpoint(work, checkpoint_bytes, kind, data, cut, flips):
    """Random bytes, a truncated checkpoint, or one with a few bytes changed."""
    from recvos.models.loading import load_checkpoint

    if kind == "random":
        blob = data
    elif kind == "truncated":
        blob = checkpoint_bytes[: int(cut * (len(checkpoint_bytes) - 1))]
    else:
        b = bytearray(checkpoint_bytes)
        for where, value in flips:
            b[int(where * (len(b) - 1))] = value
        blob = bytes(b)
    path = work / "model.pt"
    path.write_bytes(blob)
    try:
        model = load_checkpoint(path)
    except RecvosError as e:
        user_error(e, path)
        assert "weights_only" not in str(e)  # never torch's advice to unpickle arbitrary code
        return
    assert kind == "flipped" and model.name == "rvos-t"  # a byte flipped inside a weight is still a model
    event("result")


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
config_keys = st.sampled_from(
    ["train", "optim", "model", "data", "val", "seed", "out", "train.steps", "optim.lr"]
)


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(config_keys, yaml_values, max_size=4).map(lambda d: repr(d).encode()),
        st.dictionaries(
            config_keys, st.dictionaries(st.sampled_from(["steps", "lr", "batch_size", "x"]), yaml_values)
        ).map(lambda d: __import__("yaml").safe_dump(d).encode()),
    )
)
def test_random_yaml(work, raw):
    from recvos.training.config import load_config

    path = work / "preset.yaml"
    path.write_bytes(raw)
    try:
        cfg = load_config(path)
    except RecvosError as e:
        user_error(e, path)
        return
    assert cfg is not None
    event("result")


# ------------------------------------------------------------------------------------ masks
MODES = ["P", "L", "1", "I;16", "RGB", "RGBA", "LA"]  # every mode a PNG can hold


@st.composite
def mask_images(draw):
    mode = draw(st.sampled_from(MODES))
    # the frames' size, the same aspect, or any size (mostly refused)
    h, w = draw(
        st.one_of(st.just((24, 32)), st.just((12, 16)), st.tuples(st.integers(1, 40), st.integers(1, 40)))
    )
    hi = {"1": 1, "I;16": 65535}.get(mode, 255)
    ids = draw(st.lists(st.integers(0, hi), min_size=1, max_size=6, unique=True))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    a = rng.choice(np.asarray(ids, dtype=np.int64), size=(h, w))
    if mode in ("RGB", "RGBA"):
        arr = np.stack([(a * k) % 256 for k in (1, 7, 13, 5)[: len(mode)]], -1).astype(np.uint8)
        return Image.fromarray(arr)
    if mode == "LA":
        return Image.fromarray(np.stack([a % 256, np.full_like(a, 255)], -1).astype(np.uint8))
    if mode == "1":
        return Image.fromarray(a.astype(bool))
    if mode == "I;16":
        return Image.fromarray(a.astype(np.uint16))
    img = Image.fromarray(a.astype(np.uint8))
    if mode == "P":
        img = img.convert("P")
        img.putdata(a.astype(np.uint8).ravel().tolist())
    return img


@pytest.fixture(scope="module")
def frames_dir(work) -> Path:
    d = work / "clip"
    d.mkdir()
    for t in range(2):
        Image.fromarray(np.full((24, 32, 3), 40 * t, np.uint8)).save(d / f"{t:05d}.png")
    return d


@FUZZ
@given(img=mask_images(), convert=st.booleans())
def test_masks_of_random_modes_sizes_and_ids(work, frames_dir, img, convert):
    """A mask of any mode, size and ids given to `recvos segment` (everything checked before the model loads):
    a plan whose prompt holds the mask's objects, or a one-line error naming the mask and no output folder."""
    from recvos.inference.video import plan_segment

    path = work / "first.png"
    img.save(path)
    out = work / "out"
    try:
        plan = plan_segment(frames_dir, out, mask=path, convert_masks=convert)
    except RecvosError as e:
        user_error(e, path)
        assert not out.exists()  # nothing written
        return
    try:
        objs = plan.prompts[0]
        assert objs and all(0 < o <= 255 and m.shape == (24, 32) and m.any() for o, m in objs.items())
        assert out.is_dir() and not any(out.iterdir())
        event("result")
    finally:
        plan.close()
        out.rmdir()


# ------------------------------------------------------------------------------------ evaluate
@pytest.fixture(scope="module")
def gt_root(work) -> Path:
    root = work / "gt"
    ids = np.zeros((20, 24), np.int64)
    ids[5:15, 6:18] = 1
    for t in range(3):
        write_mask(root / "seq" / f"{t:05d}.png", ids)
    return root


@FUZZ
@given(
    sizes=st.lists(
        st.one_of(st.just((20, 24)), st.tuples(st.integers(1, 48), st.integers(1, 48))),
        min_size=3,
        max_size=3,
    ),
    ids=st.lists(st.integers(0, 300), min_size=1, max_size=4),
    missing=st.integers(-1, 2),
    task=st.sampled_from(["semi-supervised", "unsupervised"]),
)
def test_predictions_of_random_sizes(work, gt_root, sizes, ids, missing, task):
    """Predictions of random sizes, ids (some beyond a palette) and a missing frame, scored by evaluate:
    metrics in [0, 1] or a one-line error naming the prediction."""
    from recvos.evaluation.protocols import evaluate_sequences

    pred = work / "pred"
    seq = pred / "seq"
    seq.mkdir(parents=True, exist_ok=True)
    for p in seq.iterdir():
        p.unlink()
    rng = np.random.default_rng(len(ids) * 1000 + sum(ids))
    for t, (h, w) in enumerate(sizes):
        if t == missing:
            continue
        a = rng.choice(np.asarray(ids), size=(h, w))
        if a.max() > 255:
            Image.fromarray(a.astype(np.uint16)).save(seq / f"{t:05d}.png")
        else:
            write_mask(seq / f"{t:05d}.png", a)
    try:
        res = evaluate_sequences(gt_root, pred, task, workers=1)
    except RecvosError as e:
        msg = str(e)
        assert "\n" not in msg and (str(pred) in msg or "seq" in msg), msg
        event("RecvosError")
        return
    event("result")
    for v in res.global_metrics.values():
        assert np.isnan(v) or -1 <= v <= 1


def test_property_count_is_stated():
    """README and BENCHMARKS state the number of generated cases: keep it in sync with EXAMPLES."""
    assert all(name in globals() for name in PROPERTIES)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"{len(PROPERTIES)} properties x {EXAMPLES} cases" in readme
