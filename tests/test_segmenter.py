"""The streaming segmenter: laziness, prompts on any frame, ids, sizes, zero-shot, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from recvos.data.frames import FrameSource
from recvos.data.synthetic import synthetic_clip
from recvos.errors import RecvosError
from recvos.inference.inputs import frame_to_tensor, processing_size
from recvos.inference.segmenter import Segmenter, load_model
from recvos.models.factory import build_model
from recvos.models.loading import save_model


@pytest.fixture(scope="module")
def clip():
    return synthetic_clip(3, num_frames=6, size=(48, 64), num_objects=2)


@pytest.fixture(scope="module")
def seg() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(build_model("rvos-st", hidden_size=16), max_size=240)


@pytest.fixture(scope="module")
def zseg() -> Segmenter:
    torch.manual_seed(0)
    return Segmenter(build_model("rvos-st", mode="zero-shot", hidden_size=16, max_objects=3))


class CountingSource(FrameSource):
    """A FrameSource that counts the frames it yields and fails past ``fail_after`` frames."""

    def __init__(self, frames: np.ndarray, fail_after: int | None = None) -> None:
        self.frames = frames
        self.fail_after = fail_after
        self.read = 0

    @property
    def num_frames(self):
        return len(self.frames)

    @property
    def size(self):
        return self.frames.shape[1:3]

    @property
    def fps(self):
        return 10.0

    @property
    def frame_names(self):
        return [f"f{i:03d}" for i in range(len(self.frames))]

    def __iter__(self):
        for i, f in enumerate(self.frames):
            if self.fail_after is not None and i >= self.fail_after:
                raise RuntimeError(f"read past frame {self.fail_after}")
            self.read += 1
            yield f


def test_processing_size():
    assert processing_size((480, 854), 240) == (240, 427)
    assert processing_size((854, 480), 240) == (427, 240)
    assert processing_size((120, 160), 240) == (120, 160)  # never upscaled
    assert processing_size((480, 854), None) == (480, 854)


def test_streaming_is_lazy_for_generators(seg, clip):
    reads = []

    def frames():
        for i, f in enumerate(clip.frames):
            if i >= 3:
                raise RuntimeError("read too far")
            reads.append(i)
            yield f

    state = seg.init_state(frames())
    assert reads == [0]  # only the first frame, to size the video
    seg.add_mask(state, 0, clip.masks[0])
    it = seg.propagate(state)
    got = [next(it)[0] for _ in range(3)]
    it.close()
    assert got == [0, 1, 2] and reads == [0, 1, 2]


def test_streaming_is_lazy_for_frame_sources(seg, clip):
    src = CountingSource(clip.frames, fail_after=2)
    state = seg.init_state(src)
    assert src.read == 0
    seg.add_mask(state, 0, clip.masks[0])
    for idx, _, _ in seg.propagate(state):
        if idx == 1:
            break
    assert src.read == 2
    assert state.frame_name(1) == "f001"


def test_first_frame_prompt_is_returned_exactly_and_at_input_size(seg, clip):
    state = seg.init_state(list(clip.frames))
    ids = np.where(clip.masks[0] == 1, 42, np.where(clip.masks[0] == 2, 7, 0))
    assert seg.add_mask(state, 0, ids) == [7, 42]
    out = list(seg.propagate(state))
    assert [o[0] for o in out] == list(range(6))
    assert all(o[1] == [42, 7] or o[1] == [7, 42] for o in out)
    np.testing.assert_array_equal(out[0][2], ids)
    assert all(o[2].shape == (48, 64) and set(np.unique(o[2])) <= {0, 7, 42} for o in out)


def test_object_added_later_appears_from_its_frame(seg, clip):
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, {5: clip.masks[0] == 1})
    seg.add_mask(state, 3, {9: clip.masks[3] == 2})
    for idx, obj_ids, probs in seg.propagate(state, return_probs=True):
        assert obj_ids == ([5] if idx < 3 else [5, 9])
        assert probs.shape == (len(obj_ids), 48, 64) and probs.dtype == np.float32
        assert probs.min() >= 0 and probs.max() <= 1
        if idx == 3:
            np.testing.assert_array_equal(probs[1] > 0.5, clip.masks[3] == 2)


def test_mask_added_during_propagation(seg, clip):
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, {1: clip.masks[0] == 1})
    seen = {}
    for idx, obj_ids, ids in seg.propagate(state):
        seen[idx] = obj_ids
        if idx == 1:
            seg.add_mask(state, 4, {2: clip.masks[4] == 2})
            with pytest.raises(RecvosError, match="already passed frame 1"):
                seg.add_mask(state, 1, {3: clip.masks[1] == 2})
        if idx == 4:
            np.testing.assert_array_equal(ids == 2, clip.masks[4] == 2)
    assert seen[3] == [1] and seen[4] == [1, 2]


def test_new_slot_state_matches_a_fresh_init(seg, clip):
    """Extending a running state with a new object = concatenating a fresh init_state along the object axis."""
    x = frame_to_tensor(clip.frames[0], (48, 64), torch.device("cpu"))
    m = torch.from_numpy(np.stack([clip.masks[0] == 1, clip.masks[0] == 2])).float()[None]
    with torch.inference_mode():
        a = seg.model.init_state(x, m[:, :1])
        both = a.cat_objects(seg.model.init_state(x, m[:, 1:]))
        ref = seg.model.init_state(x, m)
        assert both.num_objects == 2
        for h, r in zip(both.hidden, ref.hidden, strict=True):
            assert h.shape == r.shape and torch.equal(h, r)
        back = both.select_objects([1])
        assert back.num_objects == 1 and back.hidden[0].shape[1] == 1
        for h, r in zip(back.hidden, seg.model.init_state(x, m[:, 1:]).hidden, strict=True):
            assert torch.equal(h, r)


def test_s2s_object_joining_later_runs_the_initializer(clip):
    torch.manual_seed(0)
    seg = Segmenter(build_model("s2s", hidden_size=16, decoder_dims=(16, 8, 8, 8, 8)))
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, {1: clip.masks[0] == 1})
    seg.add_mask(state, 2, {2: clip.masks[2] == 2})
    seen = {t: ids for t, ids, _ in seg.propagate(state)}
    assert seen[1] == [1] and seen[2] == [1, 2]
    x = frame_to_tensor(clip.frames[2], (48, 64), torch.device("cpu"))
    m1 = torch.from_numpy(clip.masks[0] == 1).float()[None, None]
    m2 = torch.from_numpy(clip.masks[2] == 2).float()[None, None]
    with torch.inference_mode():
        joined = seg.model.init_state(x, m1).cat_objects(seg.model.init_state(x, m2))
        fresh = seg.model.init_state(x, m2)
    assert joined.num_objects == 2 and torch.equal(joined.h[:, 1], fresh.h[:, 0])


@pytest.mark.parametrize("memory", [None, 4])
def test_s2s_with_matching_memory_tracks_objects_added_later(clip, memory):
    """S2S's matching option through the Segmenter: an object added on frame 2 gets its own reference and
    memory entry; memory=K resizes the propagating copy's memory, as for RVOS."""
    torch.manual_seed(0)
    model = build_model(
        "s2s", hidden_size=16, decoder_dims=(16, 8, 8, 8, 8), reference=True, ref_dim=4, memory=2
    )
    seg = Segmenter(model, memory=memory)
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, {1: clip.masks[0] == 1})
    seg.add_mask(state, 2, {2: clip.masks[2] == 2})
    seen = {t: (ids, probs) for t, ids, probs in seg.propagate(state, return_probs=True)}
    assert seen[1][0] == [1] and seen[5][0] == [1, 2]
    np.testing.assert_array_equal(seen[2][1][1] > 0.5, clip.masks[2] == 2)
    assert seg._runner().memory == (memory or 2)


def test_remove_object(seg, clip):
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    seg.add_mask(state, 2, {8: clip.masks[2] == 1})
    seg.remove_object(state, 8)
    assert state.object_ids == [1, 2]
    with pytest.raises(RecvosError, match="no object 8"):
        seg.remove_object(state, 8)
    for idx, obj_ids, ids in seg.propagate(state):
        if idx == 1:
            seg.remove_object(state, 2)
        assert obj_ids == ([1, 2] if idx <= 1 else [1])
        if idx > 1:
            assert 2 not in np.unique(ids)


def test_output_size_and_prompts_at_other_sizes(seg, clip):
    """Frames 48x64, outputs 96x128 (like DAVIS-2016's 240p frames with 480p masks)."""
    state = seg.init_state(list(clip.frames), output_size=(96, 128))
    big = np.kron(clip.masks[0], np.ones((2, 2), dtype=np.int64))
    seg.add_mask(state, 0, big)
    out = list(seg.propagate(state))
    assert all(ids.shape == (96, 128) for _, _, ids in out)
    np.testing.assert_array_equal(out[0][2], big)
    # a mask at the frame size is accepted too
    state = seg.init_state(list(clip.frames), output_size=(96, 128))
    seg.add_mask(state, 0, clip.masks[0])
    np.testing.assert_array_equal(state.prompts[0][1], big == 1)


def test_max_size_resizes_processing_but_not_outputs(clip):
    torch.manual_seed(0)
    seg = Segmenter(build_model("rvos-t", hidden_size=16), max_size=24)
    state = seg.init_state(list(clip.frames))
    assert state.proc_size == (24, 32)
    seg.add_mask(state, 0, clip.masks[0])
    out = list(seg.propagate(state))
    assert all(ids.shape == (48, 64) for _, _, ids in out)


def test_propagate_twice_needs_a_reiterable_source(seg, clip):
    state = seg.init_state(iter(list(clip.frames)))
    seg.add_mask(state, 0, clip.masks[0])
    assert len(list(seg.propagate(state))) == 6
    with pytest.raises(RecvosError, match="consumed"):
        list(seg.propagate(state))
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    first = [ids for _, _, ids in seg.propagate(state)]
    second = [ids for _, _, ids in seg.propagate(state)]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------------------------- zero-shot
def test_zero_shot_ids_are_slots_and_thresholds_apply(zseg, clip):
    loose = Segmenter(zseg.model, objectness_threshold=0.0, min_area=0.0)
    out = list(loose.propagate(loose.init_state(list(clip.frames)), zero_shot=True, return_probs=True))
    assert len(out) == 6
    for _, obj_ids, probs in out:
        assert set(obj_ids) <= {1, 2, 3} and probs.shape == (len(obj_ids), 48, 64)
    strict = Segmenter(zseg.model, objectness_threshold=1.0)  # nothing passes
    out = list(strict.propagate(strict.init_state(list(clip.frames)), zero_shot=True))
    assert all(obj_ids == [] and not ids.any() for _, obj_ids, ids in out)


def test_zero_shot_slot_keeps_its_id(zseg, clip):
    """Slot identity is the id: a slot's mask is reported under the same id on every frame."""
    loose = Segmenter(zseg.model, objectness_threshold=0.0, min_area=0.0)
    rows = list(loose.propagate(loose.init_state(list(clip.frames)), zero_shot=True, return_probs=True))
    assert all(ids == [1, 2, 3] for _, ids, _ in rows)


def test_zero_shot_and_masks_do_not_mix(zseg, seg, clip):
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, clip.masks[0])
    with pytest.raises(RecvosError, match="zero-shot"):
        next(seg.propagate(state, zero_shot=True))
    with pytest.raises(RecvosError, match="no masks given"):
        next(seg.propagate(seg.init_state(list(clip.frames))))


# ------------------------------------------------------------------------------------------- bad input
def test_slightly_different_mask_size_is_resized_with_a_warning(seg, clip, caplog):
    state = seg.init_state(list(clip.frames))
    with caplog.at_level(logging.WARNING):
        seg.add_mask(state, 0, clip.masks[0][:, :63])
    assert "resizing" in caplog.text
    assert state.prompts[0][1].shape == (48, 64)


def test_grossly_different_mask_size_is_an_error(seg, clip):
    state = seg.init_state(list(clip.frames))
    with pytest.raises(RecvosError, match="mask is 32x48"):
        seg.add_mask(state, 0, np.ones((48, 32), dtype=np.int64))


def test_mask_without_objects_is_an_error(seg, clip):
    state = seg.init_state(list(clip.frames))
    with pytest.raises(RecvosError, match="no objects"):
        seg.add_mask(state, 0, np.zeros((48, 64), dtype=np.int64))
    with pytest.raises(RecvosError, match="empty"):
        seg.add_mask(state, 0, {3: np.zeros((48, 64), dtype=bool)})
    with pytest.raises(RecvosError, match="positive"):
        seg.add_mask(state, 0, {0: clip.masks[0] == 1})


def test_mask_beyond_the_video(seg, clip):
    state = seg.init_state(list(clip.frames))  # length known: error up front
    with pytest.raises(RecvosError, match="beyond the video"):
        seg.add_mask(state, 6, clip.masks[0])
    state = seg.init_state(iter(list(clip.frames)))  # length unknown: error once the video ends
    seg.add_mask(state, 0, clip.masks[0])
    seg.add_mask(state, 9, clip.masks[0])
    got = []
    with pytest.raises(RecvosError, match=r"frame\(s\) \[9\].*only 6 frames"):
        for idx, _, _ in seg.propagate(state):
            got.append(idx)
    assert got == list(range(6))


def test_frames_of_another_size_are_an_error(seg, clip):
    frames = list(clip.frames[:3]) + [np.zeros((40, 64, 3), np.uint8)]
    state = seg.init_state(frames)
    seg.add_mask(state, 0, clip.masks[0])
    with pytest.raises(RecvosError, match="frame 3 is 64x40"):
        list(seg.propagate(state))


def test_load_model_names_paths_and_errors(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        s = load_model("rvos-t", hidden_size=16, max_size=100, allow_random=True)
    assert "random weights" in caplog.text and s.max_size == 100
    ckpt = tmp_path / "m.pt"
    save_model(s.model, ckpt)
    assert load_model(ckpt).model.name == "rvos-t"
    with pytest.raises(RecvosError, match="not found"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(RecvosError, match="unknown model"):
        load_model("no-such-model")
    default = load_model(None)  # the shipped one-shot default (its hash is checked on load)
    assert default.model.one_shot and default.model.name == "rvos-st"


def test_checkpoint_of_another_architecture_is_an_error(tmp_path):
    a = build_model("rvos-t", hidden_size=16)
    ckpt = {
        "format": "recvos-model/1",
        "model_name": "rvos-st",
        "model_config": dict(a.config),
        "state_dict": a.state_dict(),
    }
    ckpt["model_config"].pop("variant")
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(RecvosError, match="other.pt"):
        load_model(tmp_path / "other.pt")
    torch.save({"weights": a.state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(RecvosError, match="not a recvos checkpoint"):
        load_model(tmp_path / "foreign.pt")


# ------------------------------------------------------------------------------------------ defaults, devices
def test_default_checkpoint_is_verified(tmp_path):
    import hashlib
    import json

    from recvos.models.loading import default_checkpoint_path

    manifest = tmp_path / "manifest.json"
    with pytest.raises(RecvosError, match="no shipped one-shot weights"):
        default_checkpoint_path("one-shot", manifest)
    weights = tmp_path / "one.pt"
    weights.write_bytes(b"weights")
    entry = {
        "name": "rvos-st-lite0-davis",
        "kind": "one-shot",
        "file": "one.pt",
        "sha256": hashlib.sha256(b"weights").hexdigest(),
        "architecture": "rvos-st",
    }
    manifest.write_text(json.dumps({"format": "recvos-weights/1", "entries": [entry]}))
    assert default_checkpoint_path("one-shot", manifest) == weights
    with pytest.raises(RecvosError, match="no shipped zero-shot"):
        default_checkpoint_path("zero-shot", manifest)
    with pytest.raises(RecvosError, match="unknown default model kind"):
        default_checkpoint_path("other", manifest)
    weights.write_bytes(b"tampered")
    with pytest.raises(RecvosError, match="does not match the manifest"):
        default_checkpoint_path("one-shot", manifest)
    weights.unlink()
    with pytest.raises(RecvosError, match="missing"):
        default_checkpoint_path("one-shot", manifest)


@pytest.mark.gpu
def test_cuda_matches_cpu(clip):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    torch.manual_seed(0)
    model = build_model("rvos-st", hidden_size=16)
    cpu, gpu = Segmenter(model), Segmenter(build_model("rvos-st", hidden_size=16), device="cuda")
    gpu.model.load_state_dict(model.state_dict())
    outs = []
    for s in (cpu, gpu):
        state = s.init_state(list(clip.frames))
        s.add_mask(state, 0, clip.masks[0])
        outs.append([p for _, _, p in s.propagate(state, return_probs=True)])
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_object_added_later_is_matched_against_its_own_frame(clip):
    """With a first-frame reference, an object prompted on frame 3 keeps frame 3 as its reference."""
    torch.manual_seed(0)
    seg = Segmenter(build_model("rvos-st", hidden_size=16, reference=True, ref_dim=8))
    model = seg.model
    x0 = frame_to_tensor(clip.frames[0], (48, 64), torch.device("cpu"))
    x3 = frame_to_tensor(clip.frames[3], (48, 64), torch.device("cpu"))
    m0 = torch.from_numpy(clip.masks[0] == 1).float()[None, None]
    m3 = torch.from_numpy(clip.masks[3] == 2).float()[None, None]
    with torch.inference_mode():
        both = model.init_state(x0, m0).cat_objects(model.init_state(x3, m3))
        torch.testing.assert_close(both.ref_emb[:, 0], model.init_state(x0, m0).ref_emb[:, 0])
        torch.testing.assert_close(both.ref_emb[:, 1], model.init_state(x3, m3).ref_emb[:, 0])
        torch.testing.assert_close(both.ref_mask[:, 1], model.init_state(x3, m3).ref_mask[:, 0])
        assert both.select_objects([1]).ref_emb.shape[1] == 1
    state = seg.init_state(list(clip.frames))
    seg.add_mask(state, 0, {1: clip.masks[0] == 1})
    seg.add_mask(state, 3, {2: clip.masks[3] == 2})
    seen = {idx: ids for idx, ids, _ in seg.propagate(state)}
    assert seen[2] == [1] and seen[5] == [1, 2]


def test_add_prompt_box_refines_and_propagates(seg, clip):
    """A box becomes the object's mask on its frame (inside the box), and the object is tracked from there."""
    ids = clip.masks[1]
    ys, xs = np.nonzero(ids == 2)
    state = seg.init_state(list(clip.frames))
    m = seg.add_prompt(state, 1, 7, box=(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    assert m.shape == ids.shape and m.any()
    assert not m[: ys.min()].any() and not m[:, xs.max() + 1 :].any()
    assert state.object_ids == [7]
    out = {t: (obj_ids, masks) for t, obj_ids, masks in seg.propagate(state)}
    assert out[0][0] == [] and out[1][0] == [7]
    np.testing.assert_array_equal(out[1][1] == 7, m)
    with pytest.raises(RecvosError, match="zero area|empty"):
        seg.add_prompt(state, 1, 8, box=(5, 5, 5, 20))


# ------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("opts", [{}, {"reference": True, "ref_dim": 4, "memory": 2}])
def test_bf16_propagates_a_bf16_copy_with_fp32_outputs(clip, opts):
    torch.manual_seed(0)
    model = build_model("rvos-st", hidden_size=16, **opts)
    out = {}
    for precision in ("fp32", "bf16"):
        s = Segmenter(model, max_size=None, precision=precision)
        state = s.init_state(list(clip.frames))
        s.add_mask(state, 0, np.asarray(clip.masks[0]))
        out[precision] = np.stack([p for _, _, p in s.propagate(state, return_probs=True)])
        runner = s._runner()
        assert {p.dtype for p in runner.parameters()} == {s.dtype}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the original stays fp32, savable
    assert out["bf16"].dtype == np.float32 and out["bf16"].shape == out["fp32"].shape
    diff = np.abs(out["bf16"] - out["fp32"])
    assert 0 < diff.max() < 0.05  # bf16 really ran, and stayed close


def test_auto_precision_follows_the_cpu(monkeypatch, caplog):
    import recvos.inference.segmenter as segmenter

    model = build_model("rvos-st", hidden_size=16)
    for native, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(segmenter, "cpu_has_native_bf16", lambda n=native: n)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="recvos.inference.segmenter"):
            assert Segmenter(model).dtype == dtype
        said = "bf16 (this CPU has native bf16)" if native else "fp32 (this CPU has no native bf16"
        assert f"precision auto: {said}" in caplog.text  # the user sees what auto picked, and why
        assert Segmenter(model, precision="fp32").dtype == torch.float32
        assert Segmenter(model, precision="bf16").dtype == torch.bfloat16
    with pytest.raises(RecvosError, match="precision 'fp16': choose one of auto, fp32, bf16"):
        Segmenter(model, precision="fp16")


def test_bf16_counts_as_native_only_where_the_cpu_has_it():
    """oneDNN 'supports' bf16 on any AVX-512 x86 CPU by emulating it (slower than fp32): native needs
    AVX512-BF16 or AMX there; on Arm, oneDNN's own check is the BF16 extension."""
    from recvos.devices import cpu_has_native_bf16, native_bf16

    assert not native_bf16("x86_64", onednn_bf16=True, avx512_bf16=False, amx=False)  # e.g. Ice Lake Xeon
    assert native_bf16("x86_64", onednn_bf16=True, avx512_bf16=True, amx=False)  # e.g. Zen 4, Cooper Lake
    assert native_bf16("AMD64", onednn_bf16=True, avx512_bf16=False, amx=True)  # Sapphire Rapids
    assert not native_bf16("x86_64", onednn_bf16=False, avx512_bf16=True, amx=True)  # no oneDNN bf16 at all
    assert native_bf16("aarch64", onednn_bf16=True, avx512_bf16=False, amx=False)
    assert not native_bf16("aarch64", onednn_bf16=False, avx512_bf16=False, amx=False)
    assert isinstance(cpu_has_native_bf16(), bool)  # and it answers on this machine


# ----------------------------------------------------------------------------------------- memory size
def test_memory_option_sets_the_frames_the_propagating_copy_remembers(clip):
    """memory=K: the propagating copy keeps K frames per object (the state's size; the weights are the same),
    the model itself keeps the value it was trained with; by default the model's own value."""
    torch.manual_seed(0)
    model = build_model("rvos-st", hidden_size=16, reference=True, ref_dim=4, memory=2)
    frame = torch.from_numpy(np.asarray(clip.frames[0])).permute(2, 0, 1)[None].float() / 255
    first = torch.from_numpy(np.asarray(clip.masks[0]) == 1)[None, None].float()
    for kw, want in (({}, 2), ({"memory": 5}, 5), ({"memory": 5, "optimize": False, "precision": "fp32"}, 5)):
        s = Segmenter(model, max_size=None, **kw)
        state = s.init_state(list(clip.frames))
        s.add_mask(state, 0, np.asarray(clip.masks[0]))
        assert len(list(s.propagate(state))) == len(clip.frames)
        runner = s._runner()
        assert runner is not model and runner.memory == want
        with torch.inference_mode():  # the copy was made while propagating (inference tensors)
            assert runner.init_state(frame.to(s.dtype), first.to(s.dtype)).mem_key.shape[2] == want
    assert model.memory == 2 and model.config["memory"] == 2


@pytest.mark.parametrize(
    "memory, needle",
    [(0, "1..64"), (65, "1..64"), (True, "1..64"), ("3", "1..64"), (3, "no matching memory")],
)
def test_memory_option_errors(memory, needle):
    model = build_model("rvos-st", hidden_size=16)  # no memory
    with pytest.raises(RecvosError, match=needle):
        Segmenter(model, memory=memory)


def test_memory_of_an_inference_only_model_is_fixed():
    import copy

    model = build_model("rvos-st", hidden_size=16, reference=True, ref_dim=4, memory=2)
    fast = copy.deepcopy(model).optimize_for_inference()
    assert Segmenter(fast, memory=2, precision="fp32").memory == 2  # its own value: fine
    with pytest.raises(RecvosError, match="inference-only"):
        Segmenter(fast, memory=4, precision="fp32")


def test_bf16_with_onnxruntime_is_refused_before_exporting(tmp_path):
    with pytest.raises(RecvosError, match="bf16 runs with the PyTorch runtime"):
        load_model("rvos-st", runtime="onnxruntime", precision="bf16", allow_random=True, hidden_size=16)


def test_cli_precision_choices_are_the_segmenters():
    import argparse

    from recvos.cli.options import add_model_options
    from recvos.inference.segmenter import PRECISIONS

    p = argparse.ArgumentParser()
    add_model_options(p)
    action = next(a for a in p._actions if a.dest == "precision")
    assert tuple(action.choices) == PRECISIONS and action.default == "auto"


def test_online_learning_then_bf16_propagation_uses_the_finetuned_weights(clip):
    torch.manual_seed(0)
    s = Segmenter(build_model("rvos-st", hidden_size=16), max_size=None, precision="bf16")
    state = s.init_state(list(clip.frames))
    s.add_mask(state, 0, np.asarray(clip.masks[0]))
    before = s._runner()
    s.finetune(state, steps=2, lr=0.05, tolerance=1.0)  # large steps, always kept
    after = s._runner()
    assert after is not before and next(after.parameters()).dtype == torch.bfloat16
    import copy

    def bf16_copy(weights):
        m = copy.deepcopy(s.model)
        m.load_state_dict(weights)
        return m.eval().optimize_for_inference().to(torch.bfloat16).state_dict()

    fast, tuned, pristine = after.state_dict(), bf16_copy(s.model.state_dict()), bf16_copy(s._pristine)
    assert all(torch.equal(fast[k], tuned[k]) for k in fast)  # the fine-tuned weights, optimised, in bf16
    assert not all(torch.equal(fast[k], pristine[k]) for k in fast)
    assert len(list(s.propagate(state))) == len(clip.frames)


# --------------------------------------------------------------------------- zero-shot: discover, track
def _zero_shot_pair(seed: int = 0):
    torch.manual_seed(seed)
    z = build_model("rvos-st", mode="zero-shot", hidden_size=16, max_objects=3)
    o = build_model("rvos-st", hidden_size=16)
    return z, o


def test_discover_then_track_hands_the_reported_objects_to_the_tracker(clip):
    """Frames before the hand-off are the zero-shot model's; after it, the tracked objects are exactly a
    one-shot run of the tracker prompted on the hand-off frame with the objects reported there."""
    z, o = _zero_shot_pair()
    frames = list(clip.frames)
    kw = dict(max_size=None, precision="fp32", objectness_threshold=0.0, min_area=0.0)
    both = Segmenter(z, tracker=o, handoff=3, **kw)
    got = [(t, ids, m) for t, ids, m in both.propagate(both.init_state(frames), zero_shot=True)]
    alone = Segmenter(z, **kw)
    ref = [m for _, _, m in alone.propagate(alone.init_state(frames), zero_shot=True)]
    for t in range(3):
        np.testing.assert_array_equal(got[t][2], ref[t])
    handed = got[2][2]
    assert handed.max() > 0  # the hand-off really happened (objects were reported on frame 2)
    tracker = Segmenter(o, max_size=None, precision="fp32")
    state = tracker.init_state(frames[2:])
    tracker.add_mask(state, 0, handed)
    tracked = [m for _, _, m in tracker.propagate(state)]
    for t in range(3, len(frames)):
        np.testing.assert_array_equal(got[t][2], tracked[t - 2])
        assert set(got[t][1]) <= set(np.unique(handed)) - {0}  # the same ids as on the hand-off frame
    assert [t for t, _, _ in got] == list(range(len(frames)))


def test_without_objects_at_the_handoff_the_zero_shot_model_goes_on(clip):
    z, o = _zero_shot_pair()
    frames = list(clip.frames)
    kw = dict(max_size=None, precision="fp32", objectness_threshold=0.0, min_area=0.0)
    both = Segmenter(z, tracker=o, handoff=2, **kw)
    state = both.init_state(frames)
    gen = both.propagate(state, zero_shot=True)
    first = next(gen)
    for obj in first[1]:  # the user removes every object before the hand-off frame
        both.remove_object(state, obj)
    rest = list(gen)
    alone = Segmenter(z, **kw)
    s2 = alone.init_state(frames)
    g2 = alone.propagate(s2, zero_shot=True)
    next(g2)
    for obj in first[1]:
        alone.remove_object(s2, obj)
    np.testing.assert_array_equal(np.stack([m for _, _, m in rest]), np.stack([m for _, _, m in g2]))


def test_tracker_options_are_checked():
    z, o = _zero_shot_pair()
    with pytest.raises(RecvosError, match="the tracker .* is a zero-shot model; it must be a one-shot model"):
        Segmenter(z, tracker=z)
    with pytest.raises(RecvosError, match="handoff -1"):
        Segmenter(z, tracker=o, handoff=-1)


def test_load_model_gives_zero_shot_models_the_shipped_tracker():
    seg = load_model(kind="zero-shot")
    assert seg.tracker is not None and seg.tracker.mode == "one-shot" and seg.handoff == 6
    assert load_model(kind="zero-shot", tracker="none").tracker is None
    assert load_model(kind="zero-shot", tracker=None).tracker is None
    assert load_model(kind="zero-shot", handoff=0).tracker is None  # never used: not loaded
    assert load_model().tracker is None  # one-shot models need none


def test_cli_handoff_default_is_the_segmenters():
    import argparse

    from recvos.cli.options import HANDOFF, add_zero_shot_options, check_model_options
    from recvos.inference.segmenter import HANDOFF as SEG_HANDOFF

    p = argparse.ArgumentParser()
    add_zero_shot_options(p)
    assert HANDOFF == SEG_HANDOFF and p.parse_args([]).handoff == SEG_HANDOFF
    with pytest.raises(RecvosError, match="--handoff -2"):
        check_model_options(argparse.Namespace(handoff=-2, max_size=240))


def test_objects_removed_after_the_handoff_leave_the_tracker(clip):
    z, o = _zero_shot_pair(seed=10)  # a seed whose random zero-shot model hands over two objects
    kw = dict(max_size=None, precision="fp32", objectness_threshold=0.0, min_area=0.0)
    seg = Segmenter(z, tracker=o, handoff=2, **kw)
    state = seg.init_state(list(clip.frames))
    gen = seg.propagate(state, zero_shot=True)
    out = [next(gen) for _ in range(3)]  # frames 0-2: the tracker has taken over on frame 1
    ids = out[-1][1]
    assert len(ids) >= 2
    seg.remove_object(state, ids[0])
    t, now, m = next(gen)
    assert ids[0] not in now and ids[0] not in np.unique(m) and set(now) <= set(ids[1:])
    for obj in ids[1:]:
        seg.remove_object(state, obj)
    rest = list(gen)
    assert [t for t, _, _ in rest] == list(range(4, len(clip.frames)))
    assert all(not objs and not m.any() for _, objs, m in rest)


# ------------------------------------------------------------------------------------------ small objects
def _video(h=240, w=320, n=4, seed=0):
    g = np.random.default_rng(seed)
    return [g.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _box(h, w, y0, x0, side):
    m = np.zeros((h, w), bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_a_small_object_raises_the_processing_size(caplog):
    """An object under 0.5% of the frame, given before propagation: the video is processed at
    small_object_size (upscaled from 240p here); the model sees frames of that size and the masks come back
    at the frames' size."""
    from recvos.inference.segmenter import SMALL_OBJECT_AREA, SMALL_OBJECT_SIZE

    torch.manual_seed(0)
    seg = Segmenter(build_model("rvos-st", hidden_size=16), precision="fp32")
    frames = _video()
    tiny = _box(240, 320, 100, 100, 12)  # 144 px: 0.19% of the frame
    assert tiny.mean() < SMALL_OBJECT_AREA
    state = seg.init_state(frames)
    assert state.proc_size == (240, 320)
    with caplog.at_level(logging.INFO, logger="recvos.inference.segmenter"):
        seg.add_mask(state, 0, {1: _box(240, 320, 20, 20, 80), 2: tiny})
    assert state.proc_size == (SMALL_OBJECT_SIZE, 480)
    assert "object 2 covers 0.19% of the frame: processing at 480x360 instead of 320x240" in caplog.text
    seen = []
    runner = seg._runner()
    original = runner.step

    def spy(frame, *a, **k):
        seen.append(tuple(frame.shape[-2:]))
        return original(frame, *a, **k)

    runner.step = spy
    out = list(seg.propagate(state))
    assert set(seen) == {(360, 480)} and all(ids.shape == (240, 320) for _, _, ids in out)


@pytest.mark.parametrize("small_object_size", [None, 0])
def test_the_small_object_size_can_be_turned_off(small_object_size):
    seg = Segmenter(build_model("rvos-st", hidden_size=16), small_object_size=small_object_size)
    state = seg.init_state(_video())
    seg.add_mask(state, 0, {1: _box(240, 320, 100, 100, 12)})
    assert state.proc_size == (240, 320)


def test_large_objects_and_late_small_objects_keep_the_size():
    """Objects of 0.5% and more leave the size alone; a small object added once propagation has started
    cannot change it (the recurrent state has that size); a processing size already as large is kept."""
    seg = Segmenter(build_model("rvos-st", hidden_size=16), precision="fp32")
    state = seg.init_state(_video(n=5))
    seg.add_mask(state, 0, {1: _box(240, 320, 100, 100, 20)})  # 400 px: 0.52%
    assert state.proc_size == (240, 320)
    gen = seg.propagate(state)
    next(gen)
    seg.add_mask(state, 3, {2: _box(240, 320, 10, 10, 5)})
    assert state.proc_size == (240, 320)
    assert len(list(gen)) == 4
    big = Segmenter(build_model("rvos-st", hidden_size=16), max_size=480)
    state = big.init_state(_video(h=480, w=640, n=2))
    big.add_mask(state, 0, {1: _box(480, 640, 10, 10, 10)})
    assert state.proc_size == (480, 640)


def test_small_object_size_is_checked_and_the_cli_default_is_the_segmenters():
    import argparse

    from recvos.cli.options import SMALL_OBJECT_SIZE, add_model_options, check_model_options
    from recvos.inference.segmenter import SMALL_OBJECT_SIZE as SEG_SIZE

    with pytest.raises(
        RecvosError, match=r"small_object_size \(--small-object-size\) 8: .* --small-object-size 360"
    ):
        Segmenter(build_model("rvos-st", hidden_size=16), small_object_size=8)
    p = argparse.ArgumentParser()
    add_model_options(p)
    args = p.parse_args([])
    check_model_options(args)
    assert SMALL_OBJECT_SIZE == SEG_SIZE and args.small_object_size == SEG_SIZE
    assert check_model_options(p.parse_args(["--small-object-size", "0"])) is None
    with pytest.raises(RecvosError, match=r"\(--small-object-size\) 8: "):
        check_model_options(p.parse_args(["--small-object-size", "8"]))


def test_frames_are_enlarged_bilinearly_and_shrunk_by_area():
    frame = np.zeros((2, 2, 3), np.uint8)
    frame[:, 1] = 255
    up = frame_to_tensor(frame, (4, 4), torch.device("cpu"))[0, 0]
    assert 0 < up[0, 1] < 1 and 0 < up[0, 2] < 1  # interpolated between the columns
    down = frame_to_tensor(np.repeat(np.repeat(frame, 2, 0), 2, 1), (2, 2), torch.device("cpu"))[0, 0]
    torch.testing.assert_close(down, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
