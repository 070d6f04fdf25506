"""S2S: shapes for each switch and backbone, gradients, object-permutation equivariance, temporal state."""

from __future__ import annotations

import pytest
import torch

from recvos.errors import RecvosError
from recvos.models.factory import build_model
from recvos.models.s2s import S2S

H, W = 61, 107


def tiny(**kw) -> S2S:
    torch.manual_seed(0)
    kw = {"backbone": "resnet18", "hidden_size": 16, "decoder_dims": (16, 8, 8, 4, 4), **kw}
    return build_model("s2s", **kw)


def clip(B=2, T=3, O=3, seed=0):  # noqa: E741 (the shape letter)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, T, 3, H, W, generator=g), (torch.rand(B, T, O, H, W, generator=g) > 0.5).float()


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"use_initializer": False},
        {"prev_mask_input": True},
        {"backbone": "vgg16"},
        {"backbone": "efficientnet_lite0"},
    ],
)
def test_shapes(kw, unroll):
    model = tiny(**kw).eval()
    frames, masks = clip()
    with torch.no_grad():
        out = unroll(model, frames, masks)
    assert out.logits.shape == (2, 3, 3, H, W)
    assert out.objectness.shape == (2, 3, 3) and out.objectness.eq(1).all()
    assert model.uses_prev_masks == bool(kw.get("prev_mask_input", False))
    assert (model.initializer is None) == (kw.get("use_initializer") is False)


@pytest.mark.parametrize("kw", [{}, {"prev_mask_input": True}])
def test_gradients_reach_every_parameter(kw, unroll):
    model = tiny(**kw).train()
    frames, masks = clip(B=2, T=3, O=2)
    unroll(model, frames, masks, teacher=False).logits.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("kw", [{}, {"prev_mask_input": True}])
def test_object_permutation_equivariance(kw, unroll):
    model = tiny(**kw).eval()
    frames, masks = clip(O=3)
    perm = torch.tensor([1, 2, 0])
    with torch.no_grad():
        a = unroll(model, frames, masks).logits
        b = unroll(model, frames, masks[:, :, perm]).logits
    assert torch.allclose(a[:, :, perm], b, atol=1e-5)


def test_first_mask_and_state_drive_the_output():
    model = tiny().eval()
    frames, masks = clip(B=1, T=2, O=1)
    with torch.no_grad():
        s0 = model.init_state(frames[:, 0], masks[:, 0])
        s0_other = model.init_state(frames[:, 0], 1 - masks[:, 0])
        a = model.step(frames[:, 1], s0, None)
        b = model.step(frames[:, 1], s0_other, None)
        c = model.step(frames[:, 1], a.state, None)
    assert not torch.allclose(a.logits, b.logits)  # the initializer sees the mask
    assert not torch.allclose(a.logits, c.logits)  # the recurrent state carries over frames


def test_initializer_extra_channel_and_zero_shot_rejected():
    model = tiny()
    conv = model.initializer.first_conv()
    assert conv.weight.shape[1] == 4
    assert torch.allclose(conv.weight[:, 3], conv.weight[:, :3].mean(1))
    frame = torch.rand(1, 3, H, W)
    with pytest.raises(RecvosError, match="semi-supervised only"):
        model.init_state(frame, None)
    with pytest.raises(RecvosError, match="decoder_dims"):
        tiny(decoder_dims=(4, 4))


# --- matching: the first-frame reference and the memory of RVOS, as an option -------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {"reference": True, "ref_dim": 8},
        {"memory": 2, "ref_dim": 8},
        {"reference": True, "ref_dim": 8, "memory": 2, "prev_mask_input": True},
        {"reference": True, "ref_dim": 8, "memory": 2, "use_initializer": False},
    ],
)
def test_matching_shapes_bounded_memory_and_gradients(kw, unroll):
    from recvos.models.feed import FirstFrameFeed

    model = tiny(**kw).eval()
    frames, masks = clip(B=2, T=5, O=2)
    with torch.no_grad():
        results = list(model.unroll(frames.unbind(1), FirstFrameFeed(masks[:, 0])))
    assert torch.stack([r.logits for r in results], 1).shape == (2, 5, 2, H, W)
    assert model.uses_prev_masks == bool(kw.get("memory") or kw.get("prev_mask_input"))
    if kw.get("memory"):  # K frames per object at every step, whatever the length
        assert {tuple(r.state.mem_key.shape) for r in results} == {(2, 2, 2, 8, 4 * 7)}
        assert results[-1].state.mem_valid.min() == 1
    else:
        assert results[-1].state.mem_key is None and results[-1].state.ref_emb is not None
    model.train()
    unroll(model, frames[:, :3], masks[:, :3], teacher=False).logits.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize(
    "before, after",
    [
        ({}, {"reference": True, "ref_dim": 8}),
        ({"prev_mask_input": True}, {"prev_mask_input": True, "memory": 2, "ref_dim": 8}),
        ({"reference": True, "ref_dim": 8}, {"reference": True, "ref_dim": 8, "memory": 2}),
    ],
)
def test_matching_warm_start_is_exact(before, after, unroll):
    """adapt_state_dict inserts zero weights for the new map channels (ConvLSTM and first decoder stage,
    after the maps the checkpoint has): the warm-started model computes exactly what the old one did."""
    old = tiny(**before).eval()
    new = tiny(**after).eval()
    missing = new.load_state_dict(new.adapt_state_dict(old.state_dict()), strict=False).missing_keys
    assert set(missing) <= {"ref_embed.weight", "ref_embed.bias", "mem_log_scale"} and missing
    frames, masks = clip(B=1, T=4, O=2)
    with torch.no_grad():
        a = unroll(old, frames, masks, teacher=False).logits
        b = unroll(new, frames, masks, teacher=False).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_matching_maps_change_the_output_and_objects_compete():
    """With non-zero map weights the masks read out of the memory move the output, and each object's output
    depends on the other objects (the 'others' readout), unlike plain S2S."""
    model = tiny(memory=2, ref_dim=8).eval()
    frames, masks = clip(B=1, T=3, O=2)
    with torch.no_grad():
        state = model.init_state(frames[:, 0], masks[:, 0])
        a = model.step(frames[:, 1], state, masks[:, 0]).logits
        other = masks[:, 0].clone()
        other[:, 1] = 1 - other[:, 1]  # only object 1's fed-back mask changes
        b = model.step(frames[:, 1], state, other).logits
    assert not torch.allclose(a[:, 0], b[:, 0])  # object 0 sees object 1 through the competition


def test_matching_options_are_checked_and_saved(tmp_path):
    from recvos.models.loading import load_checkpoint, save_model

    for bad, needle in (({"memory": 65}, "0..64"), ({"memory": 2, "mem_top_k": 0}, "mem_top_k")):
        with pytest.raises(RecvosError, match=needle):
            tiny(**bad)
    assert "memory" not in tiny().config and "reference" not in tiny().config  # plain S2S: config unchanged
    save_model(tiny(reference=True, ref_dim=8, memory=3), tmp_path / "m.pt")
    back = load_checkpoint(tmp_path / "m.pt")
    assert back.memory == 3 and back.reference and back.config["mem_top_k"] == 20
