"""The convolutional LSTM cell (Shi et al. 2015), written once and used by RVOS and S2S.

Gates i, f, o, g come from one k x k convolution over ``[input, hidden, *extra hidden]``::

    i, f, o = sigmoid(.), g = act(.)
    c' = f * c + i * g
    h' = o * act(c')

with ``act`` = tanh (the original cell, RVOS) or ReLU (S2S). ``extra_hidden`` adds more hidden-state-sized
inputs to the gate convolution (RVOS-ST feeds the spatial state as the cell state and the temporal hidden
state as an extra input).

An input shared by groups of consecutive batch items (e.g. the frame's features, shared by the O object
slots folded into the batch ``N = B * O``) can be given separately as ``shared`` (``shared_dim`` channels):
its gate contribution is computed once at batch B by :meth:`shared_gates` and broadcast over the group.
By linearity this equals the convolution over the concatenated input, at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from recvos.errors import RecvosError

__all__ = ["ConvLSTMCell", "LSTMState", "group_add"]

#: (h, c), each [N, hidden_dim, H, W]
LSTMState = tuple[torch.Tensor, torch.Tensor]

_ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu}
#: from this many pixels on, inference takes the gates' sigmoid in one pass (see ``forward``; measured on the
#: default model's levels in bf16: faster at f4 and f8 (60x107, 30x54), slower at f16 and f32 (15x27, 8x14))
WHOLE_SIGMOID_MIN_PIXELS = 1024


def group_add(x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """x [N, ...] + shared [B, ...] broadcast over groups of N // B consecutive items (item n belongs to
    group n // (N // B)): a per-frame term added to every object slot folded into the batch."""
    n, b = x.shape[0], shared.shape[0]
    if n == b:
        return x + shared
    return (x.unflatten(0, (b, n // b)) + shared.unsqueeze(1)).flatten(0, 1)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM cell.

    Args:
        input_dim: channels of the per-item input ``x`` (0 if there is none).
        hidden_dim: channels of h and c.
        kernel_size: odd kernel size of the gate convolution ("same" padding).
        activation: "tanh" or "relu".
        extra_hidden: number of extra [N, hidden_dim, H, W] inputs concatenated into the gate convolution.
        shared_dim: channels of an input shared by groups of batch items (0 if none), see module docs.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        kernel_size: int = 3,
        activation: str = "tanh",
        extra_hidden: int = 0,
        shared_dim: int = 0,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise RecvosError(
                f"ConvLSTM activation must be one of {sorted(_ACTIVATIONS)} (got {activation!r})"
            )
        if kernel_size % 2 != 1:
            raise RecvosError(f"ConvLSTM kernel_size must be odd (got {kernel_size})")
        self.input_dim = input_dim
        self.hidden_dim = hidden_dim
        self.extra_hidden = extra_hidden
        self.shared_dim = shared_dim
        self.activation = activation
        self._act = _ACTIVATIONS[activation]
        pad = kernel_size // 2
        self.conv = nn.Conv2d(
            input_dim + hidden_dim * (1 + extra_hidden), 4 * hidden_dim, kernel_size, padding=pad
        )
        self.shared_conv = (
            nn.Conv2d(shared_dim, 4 * hidden_dim, kernel_size, padding=pad, bias=False)
            if shared_dim
            else None
        )

    def init_state(self, ref: torch.Tensor, n: int, height: int, width: int) -> LSTMState:
        """Zero (h, c) [n, hidden_dim, height, width] with ``ref``'s dtype and device."""
        z = ref.new_zeros(n, self.hidden_dim, height, width)
        return z, z.clone()

    def shared_gates(self, shared: torch.Tensor) -> torch.Tensor:
        """shared [B, shared_dim, H, W] -> its gate contribution [B, 4 * hidden_dim, H, W]."""
        assert self.shared_conv is not None, "this cell was built with shared_dim=0"
        return self.shared_conv(shared)

    def forward(
        self,
        x: torch.Tensor | Sequence[torch.Tensor] | None,
        state: LSTMState,
        extra: Sequence[torch.Tensor] = (),
        shared_gates: torch.Tensor | None = None,
    ) -> LSTMState:
        """One step.

        x [N, input_dim, H, W], or its parts along channels (concatenated once, with the state), or None
        (input_dim = 0); state (h, c) [N, hidden_dim, H, W];
        extra: ``extra_hidden`` tensors [N, hidden_dim, H, W]; shared_gates [B, 4 * hidden_dim, H, W] from
        :meth:`shared_gates`, with N a multiple of B (item n belongs to group n // (N // B)).
        Returns the new (h, c).
        """
        h, c = state
        if len(extra) != self.extra_hidden:
            raise ValueError(f"expected {self.extra_hidden} extra hidden inputs, got {len(extra)}")
        inputs = [] if x is None else [x] if isinstance(x, torch.Tensor) else list(x)
        parts = [*inputs, h, *extra]
        gates = self.conv(parts[0] if len(parts) == 1 else torch.cat(parts, 1))
        if shared_gates is not None:
            gates = group_add(gates, shared_gates)
        if (
            not torch.is_grad_enabled()
            and gates.shape[-2] * gates.shape[-1] >= WHOLE_SIGMOID_MIN_PIXELS
            and gates.is_contiguous(memory_format=torch.channels_last)
        ):
            # inference on large channels-last maps: one sigmoid over all gates (contiguous) beats three
            # over strided channel slices (the g slice's sigmoid is unused); same values
            i, f, o, _ = torch.sigmoid(gates).chunk(4, 1)
            g = gates[:, 3 * self.hidden_dim :]
        else:
            i, f, o, g = gates.chunk(4, 1)
            i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
        c = f * c + i * self._act(g)
        h = o * self._act(c)
        return h, c

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, hidden_dim={self.hidden_dim}, activation={self.activation}, "
            f"extra_hidden={self.extra_hidden}, shared_dim={self.shared_dim}"
        )
