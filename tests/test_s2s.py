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
