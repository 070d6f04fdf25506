"""RVOS: shapes per variant and mode, gradients, recurrences (spatial, temporal), equivariance, heads."""

from __future__ import annotations

import copy

import pytest
import torch

from recvos.errors import RecvosError
from recvos.models.factory import build_model
from recvos.models.loading import save_model
from recvos.models.rvos import RVOS

H, W = 61, 107


def tiny(name: str = "rvos-st", **kw) -> RVOS:
    torch.manual_seed(0)
    kw = {"backbone": "resnet18", "hidden_size": 16, **kw}
    return build_model(name, **kw)


def clip(B=2, T=3, O=3, seed=0):  # noqa: E741 (the shape letter)
    g = torch.Generator().manual_seed(seed)
    frames = torch.rand(B, T, 3, H, W, generator=g)
    masks = (torch.rand(B, T, O, H, W, generator=g) > 0.5).float()
    return frames, masks


@pytest.mark.parametrize(
    "name,mode",
    [
        ("rvos-st", "one-shot"),
        ("rvos-st", "zero-shot"),
        ("rvos-s", "one-shot"),
        ("rvos-s", "zero-shot"),
        ("rvos-t", "one-shot"),
    ],
)
def test_shapes(name, mode, unroll):
    model = tiny(name, mode=mode, max_objects=4).eval()
    frames, masks = clip()
    with torch.no_grad():
        out = unroll(model, frames, masks if mode == "one-shot" else None)
    O = 3 if mode == "one-shot" else 4  # noqa: E741
    assert out.logits.shape == (2, 3, O, H, W)
    assert out.objectness.shape == (2, 3, O)
    assert ((out.objectness >= 0) & (out.objectness <= 1)).all()
    if mode == "one-shot":
        assert out.objectness.eq(1).all()
    assert model.uses_prev_masks == (mode == "one-shot")


def test_default_model_at_davis_internal_size():
    model = build_model("rvos-st").eval()
    frame = torch.rand(1, 3, 240, 427)
    masks = torch.zeros(1, 2, 240, 427)
    with torch.no_grad():
        out = model.step(frame, model.init_state(frame, masks), masks)
    assert out.logits.shape == (1, 2, 240, 427)
    assert [tuple(h.shape) for h in out.state.hidden] == [
        (1, 2, 128, 8, 14),
        (1, 2, 64, 15, 27),
        (1, 2, 32, 30, 54),
        (1, 2, 16, 60, 107),
    ]


@pytest.mark.parametrize(
    "name,mode",
    [("rvos-st", "one-shot"), ("rvos-st", "zero-shot"), ("rvos-s", "one-shot"), ("rvos-t", "one-shot")],
)
def test_gradients_reach_every_parameter(name, mode, unroll):
    model = tiny(name, mode=mode, max_objects=2).train()
    frames, masks = clip(B=2, T=3, O=2)
    out = unroll(
        model, frames, masks if mode == "one-shot" else None, teacher=False
    )  # own predictions fed back
    (out.logits.mean() + out.objectness.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_rvos_t_is_object_permutation_equivariant(unroll):
    model = tiny("rvos-t").eval()
    frames, masks = clip(O=3)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        a = unroll(model, frames, masks).logits
        b = unroll(model, frames, masks[:, :, perm]).logits
    assert torch.allclose(a[:, :, perm], b, atol=1e-5)


def test_spatial_recurrence_links_slots():
    """Under S/ST, slot 1 depends on slot 0's input; under T it does not."""
    frame = torch.rand(1, 3, H, W)
    masks = (torch.rand(1, 2, H, W) > 0.5).float()
    changed = masks.clone()
    changed[:, 0] = 1 - changed[:, 0]
    for name, linked in (("rvos-s", True), ("rvos-st", True), ("rvos-t", False)):
        model = tiny(name).eval()
        with torch.no_grad():
            a = model.step(frame, model.init_state(frame, masks), masks).logits
            b = model.step(frame, model.init_state(frame, changed), changed).logits
        assert not torch.allclose(a[:, 0], b[:, 0])
        assert torch.allclose(a[:, 1], b[:, 1]) != linked, name


def test_temporal_state_changes_outputs_only_with_temporal_recurrence():
    frames, masks = clip(B=1, T=2, O=2)
    for name, temporal in (("rvos-t", True), ("rvos-st", True), ("rvos-s", False)):
        model = tiny(name).eval()
        with torch.no_grad():
            state = model.step(frames[:, 0], model.init_state(frames[:, 0], masks[:, 0]), masks[:, 0]).state
            with_history = model.step(frames[:, 1], state, masks[:, 1]).logits
            fresh = model.step(frames[:, 1], model.init_state(frames[:, 1], masks[:, 0]), masks[:, 1]).logits
        assert torch.allclose(with_history, fresh, atol=1e-6) != temporal, name


def test_zero_shot_slots_differ_and_t_is_rejected():
    model = tiny("rvos-st", mode="zero-shot", max_objects=3).eval()
    frame = torch.rand(1, 3, H, W)
    with torch.no_grad():
        out = model.step(frame, model.init_state(frame, None), None)
    assert out.logits.shape == (1, 3, H, W)
    assert not torch.allclose(out.logits[:, 0], out.logits[:, 1])
    with pytest.raises(RecvosError, match="rvos-st or rvos-s"):
        tiny("rvos-t", mode="zero-shot")
    with pytest.raises(RecvosError, match="takes no masks"):
        model.init_state(frame, torch.zeros(1, 1, H, W))


def test_bad_inputs():
    model = tiny("rvos-st").eval()
    frame = torch.rand(1, 3, H, W)
    masks = torch.zeros(1, 2, H, W)
    state = model.init_state(frame, masks)
    with pytest.raises(RecvosError, match="prev_masks"):
        model.step(frame, state, None)
    with pytest.raises(RecvosError, match="does not match the state"):
        model.step(torch.rand(1, 3, 64, 64), state, torch.zeros(1, 2, 64, 64))
    with pytest.raises(RecvosError, match="variant"):
        RVOS(variant="X")
    with pytest.raises(RecvosError, match="hidden_size"):
        RVOS(hidden_size=12)


def test_optimize_for_inference_keeps_outputs(unroll):
    model = tiny("rvos-st")
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    frames, masks = clip(B=1, T=2, O=2)
    fast = copy.deepcopy(model).optimize_for_inference()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with torch.no_grad():
        a = unroll(model, frames, masks).logits
        b = unroll(fast, frames, masks).logits
    assert torch.allclose(a, b, atol=1e-4)
    with pytest.raises(RuntimeError, match="optimized for inference"):
        fast.train()
    with pytest.raises(RecvosError, match="optimized for inference"):
        save_model(fast, "unused.pt")


# --- first-frame reference (global matching against each object's annotated frame) -----------------------
def test_reference_matching_maps_on_the_reference_frame_itself():
    """Matching a frame against itself: every object pixel's best object similarity is 1 (itself), and every
    background pixel's best background similarity is 1; the object map stays below 1 outside where no
    background feature is identical to an object feature."""
    model = tiny("rvos-st", reference=True).eval()
    frame = torch.rand(1, 3, 96, 160)
    masks = torch.zeros(1, 2, 96, 160)
    masks[:, 0, 16:64, 32:96] = 1  # whole f16 cells
    masks[:, 1, 64:96, 112:160] = 1
    with torch.no_grad():
        state = model.init_state(frame, masks)
        match = model.match(model.backbone(frame)[2], state)  # [1, 2, 2, 6, 10]
    assert match.shape == (1, 2, 2, 6, 10)
    hard = torch.nn.functional.interpolate(masks, size=(6, 10), mode="area")
    for o in range(2):
        inside, outside = hard[0, o] == 1, hard[0, o] == 0
        torch.testing.assert_close(match[0, o, 0][inside], torch.ones(int(inside.sum())), atol=1e-5, rtol=0)
        torch.testing.assert_close(match[0, o, 1][outside], torch.ones(int(outside.sum())), atol=1e-5, rtol=0)
        assert match[0, o, 0][outside].max() < 1 - 1e-4
    # per object: object 0's object map is object 1's background map only where they agree, not everywhere
    assert not torch.allclose(match[0, 0, 0], match[0, 1, 1])


def test_reference_warm_start_keeps_the_outputs_and_learns(unroll):
    """adapt_state_dict inserts zero weights for the matching channels: the warm-started model computes
    exactly what the model without reference did, and the new weights receive gradients."""
    old = tiny("rvos-st").eval()
    new = tiny("rvos-st", reference=True).eval()
    missing, unexpected = new.load_state_dict(new.adapt_state_dict(old.state_dict()), strict=False)
    assert sorted(missing) == ["ref_embed.bias", "ref_embed.weight"] and not unexpected
    frames, masks = clip(B=1, T=3, O=2)
    with torch.no_grad():
        a = unroll(old, frames, masks, teacher=False).logits
        b = unroll(new, frames, masks, teacher=False).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    new.train()
    unroll(new, frames, masks, teacher=False).logits.sum().backward()
    g = new.cells[0].conv.weight.grad[:, 1:3]  # level 0: [mask, match fg, match bg, h, extra h]
    assert g.abs().sum() > 0


@pytest.mark.parametrize("name", ["rvos-st", "rvos-s", "rvos-t"])
def test_reference_variants_shapes_and_checkpoint_roundtrip(name, tmp_path, unroll):
    model = tiny(name, reference=True, ref_dim=8).eval()
    frames, masks = clip(B=2, T=3, O=3)
    with torch.no_grad():
        out = unroll(model, frames, masks, teacher=False)
    assert out.logits.shape == (2, 3, 3, H, W)
    save_model(model, tmp_path / "m.pt")
    from recvos.models.loading import load_checkpoint

    back = load_checkpoint(tmp_path / "m.pt")
    assert back.reference and back.config["ref_dim"] == 8
    with torch.no_grad():
        torch.testing.assert_close(unroll(back, frames, masks, teacher=False).logits, out.logits)


def test_reference_is_one_shot_only():
    with pytest.raises(RecvosError, match="one-shot"):
        tiny("rvos-st", mode="zero-shot", reference=True)


# --- matching memory ---------------------------------------------------------------------------------------
def test_memory_warm_start_is_exact_and_memory_stays_bounded(unroll):
    """A reference model warm-starts a memory model with identical outputs (new inputs at zero); the memory
    holds K frames however long the video, oldest dropped first."""
    from recvos.models.feed import FirstFrameFeed

    old = tiny("rvos-st", reference=True, ref_dim=8).eval()
    new = tiny("rvos-st", reference=True, ref_dim=8, memory=2).eval()
    sd = new.adapt_state_dict(old.state_dict())
    missing = new.load_state_dict(sd, strict=False).missing_keys
    assert missing == ["mem_log_scale"]
    frames, masks = clip(B=1, T=5, O=2)
    with torch.no_grad():
        a = unroll(old, frames, masks, teacher=False).logits
        results = list(new.unroll(frames.unbind(1), FirstFrameFeed(masks[:, 0])))
    b = torch.stack([r.logits for r in results], 1)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    sizes = {tuple(r.state.mem_key.shape) for r in results}
    assert sizes == {(1, 2, 2, 8, 4 * 7)}  # [B, O, K, E, P] at every frame (f16 of 61x107: 4x7)
    assert results[0].state.mem_valid.tolist() == [[[0.0, 1.0], [0.0, 1.0]]]
    assert results[-1].state.mem_valid.min() == 1
    # the newest entry holds the masks fed back for the previous frame
    fed = torch.nn.functional.interpolate(results[-2].fed, size=(4, 7), mode="area").flatten(2)
    torch.testing.assert_close(results[-1].state.mem_val[:, :, -1], fed)


def test_memory_readout_reads_the_objects_and_they_compete():
    """On the reference frame itself, with a sharp softmax, each object's readout is 1 on its own cells and
    the 'others' readout is the other object's readout."""
    model = tiny("rvos-st", reference=True, ref_dim=8, memory=1, mem_top_k=1).eval()
    frame = torch.rand(1, 3, 96, 160)
    masks = torch.zeros(1, 2, 96, 160)
    masks[:, 0, 16:64, 32:96] = 1  # whole f16 cells
    masks[:, 1, 64:96, 112:160] = 1
    with torch.no_grad():
        state = model.init_state(frame, masks)
        q = torch.nn.functional.normalize(model.ref_embed(model.backbone(frame)[2]), dim=1)
        read = model.read_memory(q, state)  # memory still empty: the reference alone
    hard = torch.nn.functional.interpolate(masks, size=(6, 10), mode="area")
    torch.testing.assert_close(read[0, :, 0], hard[0])  # top-1 neighbour of a pixel is itself
    torch.testing.assert_close(read[0, 0, 1], read[0, 1, 0])
    torch.testing.assert_close(read[0, 1, 1], read[0, 0, 0])


def test_memory_options_are_checked():
    with pytest.raises(RecvosError, match="0..64"):
        tiny("rvos-st", reference=True, memory=-1)


def test_memory_every_n_frames_keeps_the_last_frame_of_each_block():
    """mem_every = 3, K = 2: a new entry every 3 writes, the writes in between replace the newest entry, so the
    newest entry is always the last frame and the older one the last frame of the block before."""
    from dataclasses import replace

    model = tiny("rvos-st", reference=True, ref_dim=8, memory=2, mem_every=3).eval()
    assert model.config["mem_every"] == 3
    assert "mem_every" not in tiny("rvos-st", reference=True, ref_dim=8, memory=2).config  # old configs kept
    with torch.no_grad():
        state = model.init_state(torch.rand(1, 3, 48, 64), torch.ones(1, 2, 48, 64))
    assert state.mem_age.tolist() == [[0.0, 0.0]]
    P = state.mem_key.shape[-1]
    expected = {
        0: [None, 0],
        1: [None, 1],
        2: [None, 2],
        3: [2, 3],
        4: [2, 4],
        5: [2, 5],
        6: [5, 6],
        7: [5, 7],
    }
    for w in range(8):  # write w carries key value w and mask value w
        key = torch.full_like(state.last_key, float(w))
        state = model.remember(
            replace(state, last_key=key), torch.full((1, 2, 4, P // 4), float(w)), (4, P // 4)
        )
        got = [
            None if v < 0.5 else int(k)
            for v, k in zip(state.mem_valid[0, 0], state.mem_key[0, 0, :, 0, 0], strict=True)
        ]
        assert got == expected[w], w
        assert [int(v) for v in state.mem_val[0, 0, :, 0]][-1] == w
        assert state.mem_age.tolist() == [[(w + 1) % 3] * 2]


def test_memory_every_is_per_object_and_checked():
    """An object entering later opens its entries at its own frames: its age differs, so the objects' keys
    are not shared (each reads its own memory); bad intervals are one-line errors."""
    from recvos.models.feed import FirstFrameFeed

    model = tiny("rvos-st", reference=True, ref_dim=8, memory=2, mem_every=3, mem_top_k=5).eval()
    frames, masks = clip(B=1, T=6, O=3)
    with torch.no_grad():
        results = list(model.unroll(frames.unbind(1), _LateFeed(masks)))
        plain = list(model.unroll(frames.unbind(1), FirstFrameFeed(masks[:, 0, :2])))
    # 6 writes for object 1 (frames 0-5), 4 for object 2 (entered on frame 2), 2 for object 0 (re-prompted on 4)
    assert results[-1].state.mem_age.tolist() == [[2.0, 0.0, 1.0]]
    assert not RVOS._keys_shared(results[-1].state)
    assert RVOS._keys_shared(plain[-1].state)
    for bad in (0, 101, 2.5):
        with pytest.raises(RecvosError, match="mem_every"):
            tiny("rvos-st", reference=True, memory=2, mem_every=bad)


def test_zero_shot_memory_remembers_its_own_masks(unroll):
    """Zero-shot RVOS with memory: no reference, the memory holds the model's own fed-back masks."""
    model = tiny("rvos-st", mode="zero-shot", max_objects=2, memory=2, ref_dim=8).eval()
    assert model.uses_prev_masks and model.reference is False
    frames, _ = clip(B=1, T=3, O=2)
    from recvos.models.feed import ClipFeed

    with torch.no_grad():
        results = list(model.unroll(frames.unbind(1), ClipFeed(zero_shot=True)))
    last = results[-1].state
    assert last.ref_emb is None and last.mem_valid.tolist() == [[[1.0, 1.0], [1.0, 1.0]]]
    fed = torch.nn.functional.interpolate(results[1].fed, size=(4, 7), mode="area").flatten(2)
    torch.testing.assert_close(last.mem_val[:, :, -1], fed)
    out = unroll(model.train(), frames)
    out.logits.mean().backward()
    assert model.ref_embed.weight.grad is not None and model.mem_log_scale.grad is not None


class _LateFeed:
    """Objects 0 and 1 on frame 0, object 2 entering on frame 2 (appended), object 0 re-prompted on frame 4;
    the model's own masks fed back."""

    zero_shot = False

    def __init__(self, masks: torch.Tensor) -> None:  # masks [B, T, 3, H, W]
        self.masks = masks

    def objects(self, t: int):
        from recvos.models.feed import ObjectChange

        if t == 0:
            return ObjectChange(masks=self.masks[:, 0, :2])
        if t == 2:
            return ObjectChange(masks=self.masks[:, 2, 2:])
        if t == 4:
            reset = torch.tensor([[True, False, False]]).expand(self.masks.shape[0], -1)
            return ObjectChange(masks=self.masks[:, 4], reset=reset)
        return None

    def feedback(self, t: int, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


@pytest.mark.parametrize("late", [False, True])
@pytest.mark.parametrize("values", [0, 4])
def test_memory_readout_shared_by_objects_equals_the_per_object_readout(late, values, monkeypatch):
    """Objects given on the same frame share their keys: similarities and top-k run once for all of them.
    The outputs equal those of the per-object readout, also when objects enter or are re-prompted later
    (their keys differ until their memory is full again: the shared path must not be taken then); with
    learned memory values too (their key part is computed once per entry)."""
    from recvos.models.feed import FirstFrameFeed

    model = tiny("rvos-st", reference=True, ref_dim=8, memory=2, mem_top_k=5, value_dim=values).eval()
    frames, masks = clip(B=2, T=8, O=3)
    shared_calls: list[bool] = []
    decide = RVOS._keys_shared

    def spy(state):
        shared_calls.append(decide(state))
        return shared_calls[-1]

    def run():
        feed = _LateFeed(masks) if late else FirstFrameFeed(masks[:, 0])
        with torch.no_grad():
            return torch.cat([r.logits for r in model.unroll(frames.unbind(1), feed)], 1)

    monkeypatch.setattr(RVOS, "_keys_shared", staticmethod(spy))
    fast = run()
    taken = list(shared_calls)
    monkeypatch.setattr(RVOS, "_keys_shared", staticmethod(lambda state: False))
    torch.testing.assert_close(fast, run(), atol=1e-5, rtol=1e-5)
    # frames 0-1 share (objects 0 and 1 given on frame 0); from frame 2 on object 2 has its own reference
    # (frame 2), so they never share again; without late objects every frame shares
    assert taken == ([True, True] + [False] * 6 if late else [True] * 8)


def test_zero_shot_memory_readout_shared_by_slots_equals_the_per_slot_readout(monkeypatch):
    from recvos.models.feed import ClipFeed

    model = tiny("rvos-st", mode="zero-shot", max_objects=3, memory=2, ref_dim=8).eval()
    frames, _ = clip(B=2, T=4, O=3)

    def run():
        with torch.no_grad():
            return model.unroll_clip(frames, ClipFeed(zero_shot=True)).logits

    assert RVOS._keys_shared(model.init_state(frames[:, 0], None))
    fast = run()
    monkeypatch.setattr(RVOS, "_keys_shared", staticmethod(lambda state: False))
    torch.testing.assert_close(fast, run(), atol=1e-5, rtol=1e-5)


# --- local f8 matching -------------------------------------------------------------------------------------
def warm_started(unroll, old: RVOS, new: RVOS, extra: list[int], new_keys: list[str]):
    """Checks that ``new`` has ``extra`` more input channels per level than ``old``, that ``old``'s weights
    warm-start it leaving exactly ``new_keys`` missing, and that it then computes ``old``'s masks over a clip
    (its own loop against the reference unroll of ``old``); returns the clip, ``old``'s logits and ``new``'s
    step results."""
    from recvos.models.feed import FirstFrameFeed

    got = [n.conv.weight.shape[1] - o.conv.weight.shape[1] for n, o in zip(new.cells, old.cells, strict=True)]
    assert got == extra
    missing = new.load_state_dict(new.adapt_state_dict(old.state_dict()), strict=False).missing_keys
    assert sorted(missing) == new_keys
    frames, masks = clip(B=1, T=5, O=2)
    with torch.no_grad():
        a = unroll(old, frames, masks, teacher=False).logits
        results = list(new.unroll(frames.unbind(1), FirstFrameFeed(masks[:, 0])))
    torch.testing.assert_close(a, torch.stack([r.logits for r in results], 1), atol=1e-5, rtol=0)
    return frames, masks, a, results


def test_local_warm_start_is_exact_and_keeps_the_last_frames_keys(unroll):
    """A memory model warm-starts a local-matching one with identical outputs (the local maps enter the f8
    and f4 levels with zero weights); the state keeps the last frame's f8 keys at a fixed size."""
    old = tiny("rvos-st", reference=True, ref_dim=8, memory=2).eval()
    new = tiny("rvos-st", reference=True, ref_dim=8, memory=2, local_radius=2, local_dim=4).eval()
    assert new.config["local_radius"] == 2 and "local_radius" not in old.config  # old configs kept
    # only the two finest levels read the local maps
    frames, _, _, results = warm_started(
        unroll, old, new, [0, 0, 2, 2], ["local_embed.bias", "local_embed.weight", "local_log_scale"]
    )
    with torch.no_grad():
        keys = [
            torch.nn.functional.normalize(new.local_embed(new.backbone(f)[1]), dim=1)
            for f in frames.unbind(1)
        ]
    assert {tuple(r.state.last_key8.shape) for r in results} == {(1, 2, 4, 8, 14)}  # f8 of 61x107: 8x14
    for r, k in zip(results, keys, strict=True):
        torch.testing.assert_close(r.state.last_key8[:, 0], k, atol=1e-5, rtol=0)
        torch.testing.assert_close(r.state.last_key8[:, 1], k, atol=1e-5, rtol=0)


def test_local_readout_follows_a_shifted_object_and_objects_compete():
    """The last frame shifted by one f8 pixel: with a sharp softmax every pixel reads the mask of the pixel it
    came from, so the readout is the last mask moved with the content (a window left out at the border);
    'others' is the other object's readout."""
    model = tiny("rvos-st", reference=True, ref_dim=8, local_radius=1, local_dim=4).eval()
    with torch.no_grad():
        model.local_log_scale.fill_(8.0)  # near-argmax
    g = torch.Generator().manual_seed(0)
    last = torch.nn.functional.normalize(torch.randn(1, 4, 6, 9, generator=g), dim=1)
    q = torch.roll(last, shifts=1, dims=-1)  # the content moved one pixel to the right
    vals = torch.zeros(1, 2, 6, 9)
    vals[:, 0, 1:4, 2:5] = 1
    vals[:, 1, 3:6, 5:8] = 1
    with torch.no_grad():
        read = model.read_local(q, last.unsqueeze(1).expand(-1, 2, -1, -1, -1), vals)
    want = torch.roll(vals, shifts=1, dims=-1)
    torch.testing.assert_close(read[0, :, 0, :, 1:], want[0, :, :, 1:], atol=1e-3, rtol=0)
    torch.testing.assert_close(read[0, 0, 1], read[0, 1, 0])
    # keys given per object (objects added later) read the same as the shared view
    with torch.no_grad():
        per = model.read_local(q, last.unsqueeze(1).repeat(1, 2, 1, 1, 1), vals)
    torch.testing.assert_close(per, read)


def test_local_options_are_checked_and_need_no_reference():
    from recvos.models.feed import FirstFrameFeed

    for bad in (-1, 8, 1.5, True):
        with pytest.raises(RecvosError, match="local_radius"):
            tiny("rvos-st", local_radius=bad)
    with pytest.raises(RecvosError, match="local_dim"):
        tiny("rvos-st", local_radius=2, local_dim=0)
    # alone (no reference, no memory) and in zero-shot: the fed-back masks are its values
    for kw in ({}, {"mode": "zero-shot", "max_objects": 2}):
        model = tiny("rvos-st", local_radius=1, local_dim=4, **kw).eval()
        assert model.uses_prev_masks and model.ref_embed is None
        frames, masks = clip(B=1, T=3, O=2)
        first = masks[:, 0] if model.one_shot else None
        with torch.no_grad():
            out = list(model.unroll(frames.unbind(1), FirstFrameFeed(first)))
        assert out[-1].logits.shape == (1, 2, H, W)


# --- learned memory values ---------------------------------------------------------------------------------
def test_values_warm_start_is_exact_and_leave_the_state_as_it_is(unroll):
    """A memory model warm-starts one with learned values with identical outputs (the values enter the f32 and
    f16 levels with zero weights); the state has the same tensors, of the same shapes, as without them."""
    from recvos.models.feed import FirstFrameFeed

    old = tiny("rvos-st", reference=True, ref_dim=8, memory=2).eval()
    new = tiny("rvos-st", reference=True, ref_dim=8, memory=2, value_dim=4).eval()
    assert new.config["value_dim"] == 4 and "value_dim" not in old.config  # old configs kept
    # only the two coarsest levels read the values
    frames, masks, a, results = warm_started(
        unroll, old, new, [4, 4, 0, 0], ["value_key.bias", "value_key.weight", "value_mask.weight"]
    )
    with torch.no_grad():
        olds = list(old.unroll(frames.unbind(1), FirstFrameFeed(masks[:, 0])))
    for r, o in zip(results, olds, strict=True):
        got = {k: tuple(v.shape) for k, v in r.state.named_tensors().items()}
        assert got == {k: tuple(v.shape) for k, v in o.state.named_tensors().items()}
    # once trained (non-zero weights) the values change the masks
    with torch.no_grad():
        for level in range(2):
            new.cells[level].conv.weight.normal_(0, 0.1)
        c = torch.stack([r.logits for r in new.unroll(frames.unbind(1), FirstFrameFeed(masks[:, 0]))], 1)
    assert (c - a).abs().max() > 1e-3


def test_values_readout_reads_each_objects_values_where_it_matches():
    """With a sharp softmax every pixel attends to the remembered pixel with its own key: the readout is each
    object's value of the reference entry at that pixel (and the mask maps are what they are without values)."""
    from types import SimpleNamespace

    model = tiny("rvos-st", reference=True, ref_dim=8, memory=1, mem_top_k=5, value_dim=3).eval()
    with torch.no_grad():
        model.mem_log_scale.fill_(8.0)  # near-argmax
    g = torch.Generator().manual_seed(0)
    h, w, nobj = 6, 9, 2
    q = torch.nn.functional.normalize(torch.randn(1, 8, h, w, generator=g), dim=1)
    masks = (torch.rand(1, nobj, h * w, generator=g) > 0.5).float()
    state = SimpleNamespace(
        ref_emb=q.unsqueeze(1).expand(-1, nobj, -1, -1, -1),
        ref_mask=masks,
        mem_key=torch.zeros(1, nobj, 1, 8, h * w),
        mem_val=torch.zeros(1, nobj, 1, h * w),
        mem_valid=torch.zeros(1, nobj, 1),  # an empty memory: only the reference is read
        mem_age=None,
    )
    with torch.no_grad():
        read = model.read_memory(q, state, values=True)
        plain = model.read_memory(q, state)
        want = model.memory_values(q.flatten(2)[:, None, None], masks[:, :, None], h, w)[:, :, 0]
    assert read.shape == (1, nobj, 2 + 3, h, w)
    torch.testing.assert_close(read[:, :, :2], plain)
    torch.testing.assert_close(read[:, :, :2, :, :].flatten(3)[:, :, 0], masks, atol=1e-3, rtol=0)
    torch.testing.assert_close(read[:, :, 2:].flatten(3), want, atol=1e-3, rtol=0)
    assert want.abs().max() > 0.01 and not torch.allclose(want[:, 0], want[:, 1])  # per object


def test_value_options_are_checked():
    for bad in (-1, 257, 1.5, True):
        with pytest.raises(RecvosError, match="value_dim"):
            tiny("rvos-st", reference=True, memory=2, value_dim=bad)
    with pytest.raises(RecvosError, match="value_dim 4 needs a matching memory"):
        tiny("rvos-st", reference=True, value_dim=4)


def test_zero_shot_reads_values_of_the_objects_it_remembers():
    from recvos.models.feed import ClipFeed

    model = tiny("rvos-st", mode="zero-shot", max_objects=2, memory=2, ref_dim=8, value_dim=4).eval()
    frames, _ = clip(B=1, T=3, O=2)
    with torch.no_grad():
        out = model.unroll_clip(frames, ClipFeed(zero_shot=True))
    assert out.logits.shape == (1, 3, 2, H, W) and torch.isfinite(out.logits).all()
