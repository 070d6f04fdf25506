"""Convolutions run by oneDNN with pre-packed weights, the activation after them fused in (CPU inference).

Eager PyTorch re-lays out a convolution's weight into oneDNN's blocked format on every call, and runs the
ReLU6 after it as a separate pass over the output. Both cost most on the shapes of this package's models:
the ConvLSTM gate convolutions have large weights and small maps (f32: 261 -> 512 channels at 8 x 14), and
the EfficientNet-Lite backbone follows every convolution but the projections with a ReLU6. :class:`PackedConv2d`
lays the weight out once per input shape (``torch.ops.mkldnn._reorder_convolution_weight``) and runs
convolution, bias and activation as one oneDNN primitive (``torch.ops.mkldnn._convolution_pointwise``):
the two operators PyTorch's own compiler (Inductor) emits for CPU convolutions. The outputs are those of
the eager convolution and activation (same oneDNN kernels; equal in bf16 and to float rounding in fp32).

:func:`pack_convolutions_` swaps them in, in place, for :meth:`RecurrentVOS.optimize_for_inference`. It is
for inference: with autograd on and a trainable weight the module runs the plain convolution; a weight
replaced or edited in place is packed again on its next use. Where oneDNN cannot run the call (a CUDA
tensor, a PyTorch build without these operators, a layout it refuses) the module runs the plain convolution
and activation. timm's TensorFlow-style same padding is applied without zero-filling the whole padded copy.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PackedConv2d", "FoldedActivation", "pack_convolutions_", "packing_available"]

log = logging.getLogger(__name__)

#: input shapes whose packed weights one convolution keeps (a video has one size; this bounds the cache)
MAX_PACKED_SHAPES = 4


class FoldedActivation(nn.Sequential):
    """What :func:`~recvos.models.base.fuse_conv_bn_` leaves of a BatchNorm with a built-in activation
    (timm's ``BatchNormAct2d``): its dropout and activation, which act directly on the preceding
    convolution's output; :func:`pack_convolutions_` fuses the activation into that convolution."""


def packing_available() -> bool:
    """Whether this PyTorch build has the oneDNN operators :class:`PackedConv2d` uses."""
    ops = torch.ops.mkldnn
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_convolution_pointwise")
        and hasattr(ops, "_reorder_convolution_weight")
    )


def _onednn_activation(act: nn.Module) -> tuple[str, list[float]] | None:
    """The oneDNN post-op name and scalars of an activation module, or None if it has none."""
    if type(act) is nn.ReLU:
        return "relu", []
    if type(act) is nn.ReLU6:
        return "hardtanh", [0.0, 6.0]
    if type(act) is nn.Hardtanh:
        return "hardtanh", [float(act.min_val), float(act.max_val)]
    if type(act) is nn.SiLU:
        return "swish", []
    return None


class PackedConv2d(nn.Module):
    """A :class:`~torch.nn.Conv2d` (or timm's ``Conv2dSame``), optionally followed by an activation, run as
    one oneDNN convolution with its weight packed once per input shape (see the module docs).

    ``conv`` stays a submodule (its weight and bias are still the parameters); ``activation`` is applied
    after it (``nn.Identity`` for none).
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module | None = None) -> None:
        super().__init__()
        post = ("none", []) if activation is None else _onednn_activation(activation)
        if post is None:
            raise ValueError(f"oneDNN has no post-op for {type(activation).__name__}")
        self.conv = conv
        self.activation = activation if activation is not None else nn.Identity()
        self._attr, self._scalars = post
        self._pad_same = type(conv).__name__ == "Conv2dSame"  # timm: pads each input like TensorFlow
        self._padding = [0, 0] if self._pad_same else [int(p) for p in conv.padding]
        self._packed: dict[tuple, torch.Tensor] = {}
        self._usable = (
            packing_available() and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # copies and pickles carry no packed weights (packed again on use)
        state["_packed"] = {}
        return state

    def _eager(self, x: torch.Tensor, padding: list[int]) -> torch.Tensor:
        """The plain convolution and activation of ``x`` (already padded for ``Conv2dSame``)."""
        c = self.conv
        y = F.conv2d(x, c.weight, c.bias, c.stride, padding, c.dilation, c.groups)
        return self.activation(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, weight = self.conv, self.conv.weight
        padding = self._padding
        if self._pad_same:
            x, padding = _pad_same(x, conv)
        if (
            not self._usable
            or x.device.type != "cpu"
            or x.dtype != weight.dtype
            or (torch.is_grad_enabled() and weight.requires_grad)
        ):
            return self._eager(x, padding)
        # in-place edits repack (inference tensors, e.g. weights converted under inference_mode, have no version)
        version = -1 if weight.is_inference() else weight._version
        key = (tuple(x.shape), x.dtype, weight.data_ptr(), version, tuple(padding))
        try:
            packed = self._packed.get(key)
            if packed is None:
                if len(self._packed) >= MAX_PACKED_SHAPES:
                    self._packed.clear()
                packed = torch.ops.mkldnn._reorder_convolution_weight(
                    weight, padding, list(conv.stride), list(conv.dilation), conv.groups, list(x.shape)
                )
                self._packed[key] = packed
            return torch.ops.mkldnn._convolution_pointwise(
                x,
                packed,
                conv.bias,
                padding,
                list(conv.stride),
                list(conv.dilation),
                conv.groups,
                self._attr,
                self._scalars,
                "",
            )
        except RuntimeError as exc:  # oneDNN refused this call: run eagerly from now on
            log.debug("oneDNN packed convolution unavailable (%s); running it eagerly", exc)
            self._usable = False
            self._packed.clear()
            return self._eager(x, padding)

    def extra_repr(self) -> str:
        return f"post_op={self._attr}" + ("" if self._usable else ", eager")


def _pad_same(x: torch.Tensor, conv: nn.Conv2d) -> tuple[torch.Tensor, list[int]]:
    """TensorFlow "same" padding of timm's ``Conv2dSame`` (``timm.layers.padding.pad_same``) -> (input,
    padding for the convolution). Where it is symmetric the convolution pads (no copy); otherwise the
    input is copied into a tensor whose border alone is zeroed (``F.pad`` zeroes all of it first)."""
    pads = []
    for size, k, s, d in zip(x.shape[-2:], conv.kernel_size, conv.stride, conv.dilation, strict=True):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    if top == bottom and left == right:
        return x, [top, left]
    h, w = x.shape[-2:]
    fmt = (
        torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    )
    shape = (*x.shape[:-2], h + top + bottom, w + left + right)
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    out[..., :top, :] = 0
    out[..., top + h :, :] = 0
    out[..., top : top + h, :left] = 0
    out[..., top : top + h, left + w :] = 0
    out[..., top : top + h, left : left + w] = x
    return out, [0, 0]


def pack_convolutions_(module: nn.Module) -> int:
    """Replace every ``nn.Conv2d`` (and timm ``Conv2dSame``) of ``module`` by a :class:`PackedConv2d`, in
    place, fusing the activation of a :class:`FoldedActivation` that follows it (its dropout must be an
    identity, as in eval mode). Returns the number of convolutions packed (0 where
    :func:`packing_available` is false)."""
    if not packing_available():
        return 0
    packed = 0
    for parent in list(module.modules()):
        if isinstance(parent, PackedConv2d):
            continue
        children = list(parent.named_children())
        for i, (name, conv) in enumerate(children):
            if type(conv) is not nn.Conv2d and type(conv).__name__ != "Conv2dSame":
                continue
            activation = None
            if i + 1 < len(children):
                after_name, after = children[i + 1]
                if (
                    isinstance(after, FoldedActivation)
                    and all(isinstance(m, nn.Identity) for m in list(after)[:-1])
                    and _onednn_activation(list(after)[-1]) is not None
                ):
                    activation = list(after)[-1]
                    setattr(parent, after_name, nn.Identity())
            setattr(parent, name, PackedConv2d(conv, activation))
            packed += 1
    return packed
