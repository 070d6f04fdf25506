"""The ConvLSTM cell: shapes, gate algebra, the shared-input shortcut, extra hidden inputs."""

from __future__ import annotations

import pytest
import torch

from recvos.errors import RecvosError
from recvos.models.convlstm import ConvLSTMCell


def test_shapes_and_zero_state():
    cell = ConvLSTMCell(5, 8, kernel_size=3)
    x = torch.rand(3, 5, 7, 9)
    h, c = cell(x, cell.init_state(x, 3, 7, 9))
    assert h.shape == c.shape == (3, 8, 7, 9)
    assert h.abs().max() < 1  # tanh cell: |h| = |o * tanh(c)| < 1


def test_matches_the_lstm_equations():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, kernel_size=1)
    x, h0, c0 = torch.rand(1, 2, 1, 1), torch.rand(1, 3, 1, 1), torch.rand(1, 3, 1, 1)
    h, c = cell(x, (h0, c0))
    gates = cell.conv(torch.cat([x, h0], 1))
    i, f, o, g = (
        gates.sigmoid()[:, 0:3],
        gates.sigmoid()[:, 3:6],
        gates.sigmoid()[:, 6:9],
        gates[:, 9:].tanh(),
    )
    c_ref = f * c0 + i * g
    assert torch.allclose(c, c_ref) and torch.allclose(h, o * c_ref.tanh())


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_inference_on_large_channels_last_maps_computes_the_same_step(activation):
    """Inference on maps of WHOLE_SIGMOID_MIN_PIXELS or more in channels-last takes the gates' sigmoid in one
    pass: the same h and c as the training path (which keeps the three separate sigmoids)."""
    from recvos.models.convlstm import WHOLE_SIGMOID_MIN_PIXELS

    torch.manual_seed(0)
    cell = ConvLSTMCell(3, 4, activation=activation).to(memory_format=torch.channels_last)
    side = int(WHOLE_SIGMOID_MIN_PIXELS**0.5) + 1
    x = torch.randn(2, 3, side, side).contiguous(memory_format=torch.channels_last)
    state = (torch.randn(2, 4, side, side), torch.randn(2, 4, side, side))
    with torch.enable_grad():
        ref = cell(x, state)
    with torch.inference_mode():
        fast = cell(x, state)
    for a, b in zip(ref, fast, strict=True):
        torch.testing.assert_close(a.detach(), b)


def test_relu_activation_keeps_state_non_negative():
    cell = ConvLSTMCell(4, 6, activation="relu")
    x = torch.randn(2, 4, 5, 5)
    state = cell.init_state(x, 2, 5, 5)
    for _ in range(3):
        state = cell(x, state)
    assert (state[0] >= 0).all() and (state[1] >= 0).all() and state[0].max() > 1e-3


def test_shared_input_equals_concatenation():
    """A shared input given once per group equals the same input concatenated to every item."""
    torch.manual_seed(0)
    a, s, hid, B, G = 3, 4, 5, 2, 3
    full = ConvLSTMCell(a + s, hid, extra_hidden=1)
    split = ConvLSTMCell(a, hid, extra_hidden=1, shared_dim=s)
    with torch.no_grad():
        w = full.conv.weight  # input channel order of full: [x (a), shared (s), h, extra]
        split.conv.weight.copy_(torch.cat([w[:, :a], w[:, a + s :]], 1))
        split.conv.bias.copy_(full.conv.bias)
        split.shared_conv.weight.copy_(w[:, a : a + s])
    x, shared = torch.rand(B * G, a, 6, 7), torch.rand(B, s, 6, 7)
    h0, c0, e = torch.rand(B * G, hid, 6, 7), torch.rand(B * G, hid, 6, 7), torch.rand(B * G, hid, 6, 7)
    ref = full(torch.cat([x, shared.repeat_interleave(G, 0)], 1), (h0, c0), [e])
    out = split(x, (h0, c0), [e], shared_gates=split.shared_gates(shared))
    assert torch.allclose(ref[0], out[0], atol=1e-6) and torch.allclose(ref[1], out[1], atol=1e-6)


def test_no_input_and_gradients():
    cell = ConvLSTMCell(0, 4, shared_dim=2)
    shared = torch.rand(1, 2, 3, 3, requires_grad=True)
    h, c = cell(None, cell.init_state(shared, 2, 3, 3), shared_gates=cell.shared_gates(shared))
    h.sum().backward()
    assert shared.grad is not None and all(p.grad is not None for p in cell.parameters())


def test_errors():
    with pytest.raises(RecvosError, match="activation"):
        ConvLSTMCell(1, 1, activation="gelu")
    with pytest.raises(RecvosError, match="odd"):
        ConvLSTMCell(1, 1, kernel_size=2)
    cell = ConvLSTMCell(1, 2, extra_hidden=1)
    x = torch.rand(1, 1, 2, 2)
    with pytest.raises(ValueError, match="1 extra hidden"):
        cell(x, cell.init_state(x, 1, 2, 2))
