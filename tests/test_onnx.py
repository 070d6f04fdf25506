"""ONNX export and the ONNX Runtime model: metadata, parity with PyTorch, mismatches, the missing extra."""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import onnx
import pytest
import torch

from recvos.cli.main import main
from recvos.data.synthetic import write_synthetic_video
from recvos.errors import RecvosError
from recvos.inference.onnx import ONNX_FORMAT, OnnxModel, export_onnx, init_path
from recvos.inference.segmenter import Segmenter, load_model
from recvos.models.factory import build_model
from recvos.models.feed import FirstFrameFeed
from recvos.models.loading import save_model

SIZE = (48, 64)


def tiny_model(seed: int = 0, **options):
    """RVOS-ST with the shipped default's state (reference and matching memory), tiny and random."""
    torch.manual_seed(seed)
    return build_model("rvos-st", hidden_size=16, reference=True, memory=2, **options).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, checkpoint path, step graph path): the tiny model exported once for the module (about 10 s)."""
    d = tmp_path_factory.mktemp("onnx")
    model = tiny_model()
    save_model(model, d / "tiny.pt")
    export_onnx(model, d / "tiny.onnx", size=SIZE, source="tiny.pt")
    return model, d / "tiny.pt", d / "tiny.onnx"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_export_writes_both_graphs_with_metadata(exported):
    model, _, path = exported
    step, init = onnx.load(str(path)), onnx.load(str(init_path(path)))
    meta = {p.key: p.value for p in step.metadata_props}
    assert meta["recvos.format"] == ONNX_FORMAT and meta["recvos.graph"] == "step"
    assert meta["recvos.model"] == "rvos-st" and meta["recvos.source"] == "tiny.pt"
    assert '"memory": 2' in meta["recvos.config"] and meta["recvos.size"] == "[48, 64]"
    assert {p.key: p.value for p in init.metadata_props}["recvos.graph"] == "init"
    names = [i.name for i in step.graph.input]
    assert names[0] == "frame" and names[-1] == "prev_masks"
    assert {"state.hidden.0", "state.ref_emb", "state.mem_key", "state.mem_valid", "state.last_key"} <= set(
        names
    )
    assert "next_state.mem_key" in [o.name for o in step.graph.output]
    # the object count is a named dynamic dimension of every state tensor
    for i in step.graph.input[1:]:
        assert i.type.tensor_type.shape.dim[1].dim_param == "O"


@pytest.mark.parametrize("num_objects", [1, 3])
def test_onnxruntime_matches_pytorch_for_any_object_count(exported, num_objects):
    model, _, path = exported
    ort_model = OnnxModel(path, threads=1)
    torch.manual_seed(1)
    frames = torch.rand(5, 1, 3, *SIZE)
    masks = (torch.rand(1, num_objects, *SIZE) > 0.5).float()
    with torch.no_grad():
        want = [r.logits for r in model.unroll(frames, FirstFrameFeed(masks))]
        got = [r.logits for r in ort_model.unroll(frames, FirstFrameFeed(masks))]
    for w, g in zip(want, got, strict=True):
        assert w.shape == g.shape == (1, num_objects, *SIZE)
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_segmenter_masks_equal_with_objects_entering_later(exported, tmp_path):
    """The Segmenter's own loop (PromptFeed, pre/post-processing) on both runtimes: objects enter on
    frames 0 and 2 and one leaves on frame 3 (state concatenation and selection on ORT's state)."""
    model, _, path = exported
    video = write_synthetic_video(tmp_path / "v.mp4", num_frames=5, size=(96, 128), masks_dir=tmp_path / "gt")
    first = np.zeros((96, 128), np.int32)
    first[10:40, 10:50] = 1
    later = np.zeros((96, 128), np.int32)
    later[50:90, 60:120] = 2
    results = []
    for runner in (model, OnnxModel(path)):
        seg = Segmenter(runner, max_size=SIZE[0])
        state = seg.init_state(video)
        seg.add_mask(state, 0, first)
        seg.add_mask(state, 2, later)
        out = []
        for t, ids, mask in seg.propagate(state):
            if t == 2:
                seg.remove_object(state, 1)
            out.append((t, ids, mask))
        results.append(out)
    for (t, ids_a, a), (_, ids_b, b) in zip(*results, strict=True):
        assert ids_a == ids_b
        for o in ids_a:
            assert iou(a == o, b == o) >= 0.99, (t, o)


def test_load_model_with_onnxruntime_checks_the_model(exported, tmp_path):
    _, ckpt, path = exported
    seg = load_model(ckpt, runtime="onnxruntime", onnx=path, max_size=SIZE[0])
    assert isinstance(seg.model, OnnxModel) and seg._runner() is seg.model
    other = tmp_path / "other.pt"
    save_model(tiny_model(seed=1), other)
    with pytest.raises(RecvosError, match="other weights than .*recvos export --onnx"):
        load_model(other, runtime="onnxruntime", onnx=path)
    save_model(tiny_model(ref_dim=8), other)
    with pytest.raises(RecvosError, match="another architecture .*recvos export --onnx"):
        load_model(other, runtime="onnxruntime", onnx=path)
    with pytest.raises(RecvosError, match="runtime='onnxruntime'"):
        load_model(ckpt, onnx=path)
    with pytest.raises(RecvosError, match="online learning"):
        seg.finetune(seg.init_state([np.zeros((48, 64, 3), np.uint8)]))


def test_files_of_another_version_or_export_are_refused(exported, tmp_path):
    _, _, path = exported
    step = onnx.load(str(path))
    for p in step.metadata_props:
        if p.key == "recvos.version":
            p.value = "0.0.1"
    old = tmp_path / "old.onnx"
    onnx.save(step, str(old))
    shutil.copy(init_path(path), init_path(old))
    with pytest.raises(RecvosError, match=r"old\.onnx: exported by recvos 0\.0\.1.*recvos export --onnx"):
        OnnxModel(old)
    del step.metadata_props[:]
    onnx.save(step, str(old))
    with pytest.raises(RecvosError, match="without recvos metadata"):
        OnnxModel(old)
    # an init graph from another export (other weights) beside the step graph
    mixed = tmp_path / "mixed.onnx"
    shutil.copy(path, mixed)
    init = onnx.load(str(init_path(path)))
    for p in init.metadata_props:
        if p.key == "recvos.weights_sha256":
            p.value = "0" * 64
    onnx.save(init, str(init_path(mixed)))
    with pytest.raises(RecvosError, match="exported from another model"):
        OnnxModel(mixed)
    with pytest.raises(RecvosError, match="exported for 64x48 frames .* --size 96x128"):
        OnnxModel(path).init_state(torch.zeros(1, 3, 96, 128), torch.ones(1, 1, 96, 128))


def test_missing_extra_is_one_line(exported, monkeypatch, tmp_path, capsys):
    _, ckpt, path = exported
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    with pytest.raises(RecvosError, match=r'pip install -e "\.\[onnx\]"'):
        load_model(ckpt, runtime="onnxruntime", onnx=path)
    video = write_synthetic_video(tmp_path / "v.mp4", num_frames=2, size=(48, 64), masks_dir=tmp_path / "gt")
    argv = ["segment", str(video), "--mask", str(tmp_path / "gt" / "00000.png"), "-o", str(tmp_path / "o")]
    assert main([*argv, "--runtime", "onnxruntime", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install -e ".[onnx]"' in err


@pytest.mark.slow
def test_cli_export_then_segment_with_onnxruntime(tmp_path, ckpt, capsys):
    """recvos export --onnx, then recvos segment --runtime onnxruntime with the file and without it (export
    on the fly): the same masks as the PyTorch runtime."""
    video = write_synthetic_video(tmp_path / "v.mp4", num_frames=4, size=(48, 64), masks_dir=tmp_path / "gt")
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", "--onnx", str(onnx_file), "--model", str(ckpt), "--size", "48x64"]) == 0
    assert onnx_file.is_file() and init_path(onnx_file).is_file()
    common = [str(video), "--mask", str(tmp_path / "gt" / "00000.png"), "--model", str(ckpt), "--no-progress"]
    outs = {}
    for name, extra in {
        "torch": [],
        "file": ["--runtime", "onnxruntime", "--onnx", str(onnx_file)],
        "now": ["--runtime", "onnxruntime"],
    }.items():
        assert main(["segment", *common, "-o", str(tmp_path / name), *extra]) == 0
        outs[name] = sorted((tmp_path / name).glob("*.png"))
    from recvos.data.masks import read_mask

    for a, b, c in zip(outs["torch"], outs["file"], outs["now"], strict=True):
        ref = read_mask(a)
        for other in (read_mask(b), read_mask(c)):
            assert iou(ref == 1, other == 1) >= 0.99
    assert main(["export", "--onnx", str(onnx_file), "--size", "48"]) == 2
    assert "--size '48'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, options",
    [
        ("rvos-s", {"mode": "zero-shot", "max_objects": 2, "hidden_size": 16}),
        ("s2s", {}),
        ("s2s", {"hidden_size": 32, "reference": True, "ref_dim": 8, "memory": 2}),
        (
            "rvos-st",
            {
                "hidden_size": 16,
                "reference": True,
                "ref_dim": 8,
                "memory": 2,
                "local_radius": 2,
                "local_dim": 4,
            },
        ),
        ("rvos-st", {"hidden_size": 16, "reference": True, "ref_dim": 8, "memory": 2, "value_dim": 4}),
    ],
)
def test_other_models_export_with_parity(tmp_path, name, options):
    """A zero-shot RVOS (fixed slots, objectness), S2S (objects folded into the batch), S2S with the
    matching option (reference and memory in its state) and RVOS with local f8 matching or learned memory
    values export too."""
    torch.manual_seed(0)
    model = build_model(name, **options).eval()
    export_onnx(model, tmp_path / "m.onnx", size=SIZE)
    masks = None if model.mode == "zero-shot" else (torch.rand(1, 2, *SIZE) > 0.5).float()
    frames = torch.rand(4, 1, 3, *SIZE)
    with torch.no_grad():
        want = list(model.unroll(frames, FirstFrameFeed(masks)))
        got = list(OnnxModel(tmp_path / "m.onnx").unroll(frames, FirstFrameFeed(masks)))
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g.logits, w.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(g.objectness, w.objectness, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.shared
def test_shipped_default_parity_on_a_real_video(shared_data, tmp_path):
    """The shipped one-shot default on ONNX Runtime vs PyTorch on DAVIS bear (mp4, 82 frames): IoU >= 0.99
    on every frame."""
    from recvos.data.masks import read_mask

    video = shared_data / "videos" / "cotracker_bear.mp4"
    gt = shared_data / "davis2016" / "Annotations" / "480p" / "bear" / "00000.png"
    if not video.is_file() or not gt.is_file():
        pytest.skip("the bear video or its annotation is not in ../shared/data")
    first = (read_mask(gt) > 0).astype(np.int32)
    masks = {}
    for runtime in ("torch", "onnxruntime"):
        seg = load_model(runtime=runtime)
        state = seg.init_state(str(video))
        seg.add_mask(state, 0, first)
        masks[runtime] = [m == 1 for _, _, m in seg.propagate(state)]
    assert len(masks["torch"]) == 82
    ious = [iou(a, b) for a, b in zip(masks["torch"], masks["onnxruntime"], strict=True)]
    assert min(ious) >= 0.99, (min(ious), int(np.argmin(ious)))
