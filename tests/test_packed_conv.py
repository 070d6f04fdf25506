"""oneDNN packed convolutions (recvos.models.packed_conv): the same outputs as the eager convolution and
activation, for every convolution shape and activation the models use; the eager fallback; repacking."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from recvos.models.factory import build_model
from recvos.models.feed import FirstFrameFeed
from recvos.models.packed_conv import (
    FoldedActivation,
    PackedConv2d,
    pack_convolutions_,
    packing_available,
)

needs_onednn = pytest.mark.skipif(
    not packing_available(), reason="this PyTorch build has no oneDNN operators"
)

CONVS = {
    "3x3": lambda: nn.Conv2d(6, 8, 3, padding=1),
    "3x3 stride 2": lambda: nn.Conv2d(6, 8, 3, stride=2, padding=1),
    "1x1 no bias": lambda: nn.Conv2d(6, 8, 1, bias=False),
    "depthwise 5x5": lambda: nn.Conv2d(6, 6, 5, padding=2, groups=6),
    "dilated": lambda: nn.Conv2d(6, 4, 3, padding=2, dilation=2),
}
ACTS = {"none": None, "relu": nn.ReLU(), "relu6": nn.ReLU6(inplace=True), "silu": nn.SiLU()}


def _eager(conv: nn.Conv2d, act: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    y = conv(x)
    return y if act is None else act(y.clone())


@needs_onednn
@pytest.mark.parametrize("conv_name", list(CONVS))
@pytest.mark.parametrize("act_name", list(ACTS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_packed_convolution_equals_the_eager_convolution_and_activation(conv_name, act_name, channels_last):
    torch.manual_seed(0)
    conv, act = CONVS[conv_name]().eval(), ACTS[act_name]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = conv.to(memory_format=fmt)
    packed = PackedConv2d(copy.deepcopy(conv), copy.deepcopy(act))
    with torch.inference_mode():
        for size in ((13, 21), (16, 16), (13, 21)):  # a second size, then the first again (cached)
            x = (torch.randn(2, 6, *size) * 4).contiguous(memory_format=fmt)
            torch.testing.assert_close(packed(x), _eager(conv, act, x), atol=1e-5, rtol=1e-5)
    assert packed._usable and packed._packed, "the oneDNN path was not taken"


@needs_onednn
def test_packed_convolution_in_bf16_equals_the_eager_bf16_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1).eval().to(torch.bfloat16).to(memory_format=torch.channels_last)
    packed = PackedConv2d(copy.deepcopy(conv), nn.ReLU6())
    x = torch.randn(1, 16, 15, 27).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        y = packed(x)
        assert y.dtype == torch.bfloat16
        torch.testing.assert_close(y.float(), nn.functional.relu6(conv(x)).float(), atol=0.05, rtol=0.02)


@needs_onednn
@pytest.mark.parametrize("kernel,stride", [(5, 2), (3, 2), (3, 1), (1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_timm_same_padding_convolution_is_packed_with_its_padding(kernel, stride, channels_last):
    """timm's TensorFlow "same" padding (asymmetric for even sizes and stride 2, symmetric otherwise)."""
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = Conv2dSame(8, 8, kernel, stride=stride, groups=8).eval().to(memory_format=fmt)
    packed = PackedConv2d(copy.deepcopy(conv), nn.ReLU6())
    with torch.inference_mode():
        for size in ((30, 54), (31, 53), (30, 53)):  # even and odd sizes pad differently
            x = (torch.randn(2, 8, *size) * 4).contiguous(memory_format=fmt)
            torch.testing.assert_close(packed(x), nn.functional.relu6(conv(x)), atol=1e-5, rtol=1e-5)
    assert packed._usable and packed._packed


def test_gradients_flow_through_the_eager_path_when_training():
    """With autograd on and trainable weights the module runs the plain convolution: gradients are right."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    packed = PackedConv2d(copy.deepcopy(conv), nn.ReLU())
    x = torch.randn(1, 4, 9, 9)
    packed(x).sum().backward()
    nn.functional.relu(conv(x)).sum().backward()
    torch.testing.assert_close(packed.conv.weight.grad, conv.weight.grad)
    assert not packed._packed


@needs_onednn
def test_in_place_weight_changes_are_seen():
    conv = nn.Conv2d(4, 4, 3, padding=1).eval()
    packed = PackedConv2d(conv)
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        before = packed(x)
        conv.weight.mul_(2)
        conv.bias.zero_()
        after = packed(x)
        torch.testing.assert_close(after, conv(x))
    assert not torch.allclose(before, after)


@needs_onednn
def test_copies_and_pickles_carry_no_packed_weights_and_compute_the_same():
    conv = nn.Conv2d(4, 4, 3, padding=1).eval()
    packed = PackedConv2d(conv, nn.ReLU6())
    x = torch.randn(1, 4, 9, 9)
    with torch.inference_mode():
        y = packed(x)
    assert packed._packed
    for clone in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
        assert not clone._packed
        with torch.inference_mode():
            torch.testing.assert_close(clone(x), y)


@needs_onednn
def test_a_refusing_onednn_falls_back_to_the_eager_convolution(monkeypatch):
    conv = nn.Conv2d(4, 4, 3, padding=1).eval()
    packed = PackedConv2d(copy.deepcopy(conv), nn.ReLU6())

    def refuse(*args, **kwargs):
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(torch.ops.mkldnn, "_convolution_pointwise", refuse)
    x = torch.randn(1, 4, 9, 9)
    with torch.inference_mode():
        torch.testing.assert_close(packed(x), nn.functional.relu6(conv(x)))
        assert not packed._usable  # and it stays eager
        torch.testing.assert_close(packed(x), nn.functional.relu6(conv(x)))


def test_only_a_folded_batchnorm_activation_is_fused():
    """A plain ReLU module after a convolution may be applied elsewhere (ResNet blocks share one): only the
    activation of a folded BatchNorm (which acts on the convolution's output by construction) is fused."""
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    folded = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), FoldedActivation(nn.Identity(), nn.ReLU6()))
    n_plain, n_folded = pack_convolutions_(plain), pack_convolutions_(folded)
    if not packing_available():
        assert n_plain == n_folded == 0
        return
    assert n_plain == n_folded == 1
    assert isinstance(plain[1], nn.ReLU) and isinstance(plain[0].activation, nn.Identity)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[0].activation, nn.ReLU6)
    assert pack_convolutions_(folded) == 0  # packing twice packs nothing more


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_optimised_efficientnet_rvos_matches_the_model_it_was_made_from(dtype):
    """The default architecture (EfficientNet-Lite backbone: Conv2dSame, folded BatchNorm + ReLU6, reference
    and memory) optimised with packing gives the outputs of the same model optimised without it."""
    torch.manual_seed(0)
    model = build_model(
        "rvos-st", backbone="efficientnet_lite0", hidden_size=16, reference=True, memory=2, frozen_bn=True
    ).eval()
    plain = copy.deepcopy(model).optimize_for_inference(pack=False).to(dtype)
    fast = copy.deepcopy(model).optimize_for_inference().to(dtype)
    packed = [m for m in fast.modules() if isinstance(m, PackedConv2d)]
    assert packed and sum(not isinstance(m.activation, nn.Identity) for m in packed) > 10  # ReLU6 fused
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(4, 1, 3, 64, 96, generator=g).to(dtype)
    first = (torch.rand(1, 2, 64, 96, generator=g) > 0.6).to(dtype)
    with torch.inference_mode():
        a = torch.stack([r.logits for r in plain.unroll(frames, FirstFrameFeed(first))])
        b = torch.stack([r.logits for r in fast.unroll(frames, FirstFrameFeed(first))])
    tol = 1e-4 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol)


@needs_onednn
def test_weights_made_under_inference_mode_are_packed():
    """Weights converted under inference_mode are inference tensors (no version counter)."""
    with torch.inference_mode():
        conv = nn.Conv2d(4, 4, 3, padding=1).eval().to(torch.float64).to(torch.float32)
        assert conv.weight.is_inference()
        packed = PackedConv2d(conv, nn.ReLU())
        x = torch.randn(1, 4, 9, 9)
        torch.testing.assert_close(packed(x), nn.functional.relu(conv(x)))
        assert packed._packed
