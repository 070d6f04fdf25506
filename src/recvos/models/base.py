"""The recurrent interface shared by every recvos model (RVOS and S2S), and the one frame loop.

Shape grammar (used in every docstring and annotation of recvos): B batch, T time (frames), O objects
(slots), C channels, H and W height and width; a stride suffix names a feature map's resolution relative to
the input (``f4`` is H/4 x W/4, then ``f8``, ``f16``, ``f32``). Frames given to models are float RGB in
[0, 1] ``[B, 3, H, W]`` (models normalise for their backbone themselves); frames from frame sources are
uint8 RGB numpy ``[H, W, 3]``. Object-id maps are integer numpy ``[H, W]`` (0 background, positive ids
objects). Per-object masks and logits are ``[B, O, H, W]``; objectness is a probability ``[B, O]``.

A model implements two calls:

- ``state = model.init_state(frame, masks)`` — frame [B, 3, H, W]; masks [B, O, H, W] float {0, 1} for
  one-shot, or ``None`` for zero-shot (then O = ``model.max_objects``).
- ``out = model.step(frame, state, prev_masks)`` — one frame; ``prev_masks`` [B, O, H, W] is what the loop
  feeds back from the previous frame (``None`` for models with ``uses_prev_masks = False``).

Everything that runs a model over frames — training (teacher forcing and Mask-ST+), validation, online
learning, the streaming :class:`~recvos.inference.segmenter.Segmenter`, ``recvos predict`` and the
benchmarks — goes through :meth:`RecurrentVOS.unroll`, so they cannot drift apart. What differs between
them is the :class:`~recvos.models.feed.Feed`: it says which objects enter (or leave) on each frame and
what the model gets back as its previous masks (the ground truth, a user's prompt, or its own prediction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from recvos.errors import RecvosError
from recvos.models.state import RecurrentState

if TYPE_CHECKING:  # pragma: no cover
    from recvos.models.feed import Feed

__all__ = [
    "RecurrentVOS",
    "RecurrentState",
    "StepOutput",
    "FrameResult",
    "ClipOutput",
    "MODES",
    "fuse_conv_bn_",
    "scan_objects",
]

MODES = ("one-shot", "zero-shot")


@dataclass
class StepOutput:
    logits: torch.Tensor  # [B, O, H, W] mask logits at the input size
    objectness: torch.Tensor  # [B, O] probability that slot o holds an object (ones in one-shot)
    state: RecurrentState


@dataclass
class FrameResult:
    """What :meth:`RecurrentVOS.unroll` yields per frame. ``logits``/``objectness``/``fed`` are None on a
    frame with no object to track yet (a one-shot video whose first object appears later)."""

    t: int
    logits: torch.Tensor | None  # [B, O, H, W]
    objectness: torch.Tensor | None  # [B, O]
    fed: torch.Tensor | None  # [B, O, H, W] the masks fed back for frame t + 1 (after the feed's overrides)
    state: RecurrentState | None


@dataclass
class ClipOutput:
    logits: torch.Tensor  # [B, T, O, H, W]
    objectness: torch.Tensor  # [B, T, O]


class RecurrentVOS(nn.Module):
    """Base class: subclasses implement ``init_state`` and ``step`` and set the class/instance attributes
    below in ``__init__``; :meth:`unroll` is shared."""

    name: str = "recurrent-vos"
    #: "one-shot" (objects given as masks) or "zero-shot" (objects discovered in ``max_objects`` slots)
    mode: str = "one-shot"
    #: True if ``step`` consumes the masks fed back from the previous frame
    uses_prev_masks: bool = True
    #: number of slots used in zero-shot mode
    max_objects: int = 1
    #: True if the backbone sees nothing but the frame, so it can be given precomputed features
    #: (:func:`recvos.models.backbones.with_features`; training from a feature cache)
    accepts_features: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        #: set by :meth:`optimize_for_inference`; such a model can no longer be trained or saved
        self.inference_only = False

    # -- the interface -----------------------------------------------------------------------------------
    def init_state(
        self, frame: torch.Tensor, masks: torch.Tensor | None
    ) -> RecurrentState:  # pragma: no cover
        raise NotImplementedError

    def step(
        self, frame: torch.Tensor, state: RecurrentState, prev_masks: torch.Tensor | None
    ) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map a state dict of a related configuration onto this model for a warm start (identity here;
        RVOS adds zero-initialised input channels for its reference matching)."""
        return dict(state_dict)

    def check_mode(self, zero_shot: bool, what: str = "this model") -> None:
        """RecvosError unless the model was built for the requested task."""
        wanted = "zero-shot" if zero_shot else "one-shot"
        if self.mode != wanted:
            fix = (
                "load a zero-shot model (recvos.load_model(kind='zero-shot'), --model with a zero-shot checkpoint)"
                if zero_shot
                else "give no masks and propagate with zero_shot=True (--zero-shot)"
            )
            raise RecvosError(f"{what} ({self.name}) is a {self.mode} model and cannot run {wanted}; {fix}")

    # -- the one frame loop ------------------------------------------------------------------------------
    def unroll(self, frames: Iterable[torch.Tensor], feed: Feed) -> Iterator[FrameResult]:
        """Run the model over ``frames`` (an iterable of [B, 3, H, W], consumed lazily), yielding a
        :class:`FrameResult` per frame. Before each frame the feed may remove, add or re-initialise
        object slots (:meth:`Feed.objects`); after it, the feed turns the logits into the masks fed back
        to the next frame (:meth:`Feed.feedback`). Gradients flow unless the caller disables them.
        """
        state: RecurrentState | None = None
        prev: torch.Tensor | None = None  # [B, O, H, W] masks fed to the next step
        for t, x in enumerate(frames):
            change = feed.objects(t)
            if change is not None:
                if change.keep is not None and state is not None:
                    index = torch.as_tensor(change.keep, dtype=torch.long, device=x.device)
                    state, prev = state.select_objects(index), prev.index_select(1, index)
                if change.masks is not None:
                    masks = change.masks.to(x.dtype)
                    fresh = self.init_state(x, masks)
                    if change.reset is not None:  # re-initialise existing slots (batched training clips)
                        state = state.where_objects(change.reset, fresh)
                        prev = torch.where(change.reset[..., None, None], masks, prev)
                    elif state is None:
                        state, prev = fresh, masks
                    else:
                        state, prev = state.cat_objects(fresh), torch.cat([prev, masks], 1)
            if state is None and feed.zero_shot:
                self.check_mode(zero_shot=True)
                state = self.init_state(x, None)
                prev = x.new_zeros(x.shape[0], state.num_objects, *x.shape[-2:])
            if state is None or state.num_objects == 0:
                yield FrameResult(t, None, None, None, state)
                continue
            out = self.step(x, state, prev if self.uses_prev_masks else None)
            state = out.state
            prev = feed.feedback(t, out.logits)
            yield FrameResult(t, out.logits, out.objectness, prev, state)

    def unroll_clip(self, frames: torch.Tensor | Sequence[torch.Tensor], feed: Feed) -> ClipOutput:
        """:meth:`unroll` over a clip, frames [B, T, 3, H, W] (or a list of T frames [B, 3, H, W]) -> stacked
        logits [B, T, O, H, W] and objectness [B, T, O] (every frame must have objects: the feed enters them
        on frame 0)."""
        results = list(self.unroll(frames.unbind(1) if torch.is_tensor(frames) else frames, feed))
        if any(r.logits is None for r in results):
            raise RecvosError("unroll_clip: the feed gave no object on the first frame of the clip")
        return ClipOutput(
            torch.stack([r.logits for r in results], 1), torch.stack([r.objectness for r in results], 1)
        )

    # -- inference speed ---------------------------------------------------------------------------------
    def optimize_for_inference(
        self, channels_last: bool = True, fuse_batchnorm: bool = True, pack: bool = True
    ) -> RecurrentVOS:
        """Make this model faster for inference, in place: eval mode, BatchNorm folded into the preceding
        convolutions, channels-last weights (faster oneDNN convolutions on CPU), and (``pack``) every
        convolution run by oneDNN on CPU with its weight pre-packed and the activation of a folded
        BatchNorm fused in (:mod:`recvos.models.packed_conv`). Outputs are unchanged up to float rounding.
        Afterwards the model cannot be trained (``train()`` raises) nor saved (its state dict lacks the
        BatchNorm entries): optimise a copy, keep the original for checkpoints. Convert the copy's dtype
        or device after this call as needed: weights are packed on first use, for the dtype they have then.
        """
        self.eval()
        if fuse_batchnorm:
            fuse_conv_bn_(self)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if pack:
            from recvos.models.packed_conv import pack_convolutions_

            pack_convolutions_(self)
        self.inference_only = True
        return self

    def train(self, mode: bool = True) -> RecurrentVOS:
        if mode and self.inference_only:
            raise RuntimeError(f"{self.name} was optimized for inference and cannot be trained")
        return super().train(mode)


def scan_objects(
    fn: Callable[[list[torch.Tensor], list[torch.Tensor]], tuple[list[torch.Tensor], list[torch.Tensor]]],
    carry: list[torch.Tensor],
    xs: list[torch.Tensor],
    length: int,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run ``fn(carry, x) -> (carry, y)`` over ``length`` object slots, one after the other: xs are
    [O, ...] (slot first), the result is the last carry and the ys stacked [O, ...]. Eagerly a Python loop;
    under ``torch.export`` a ``scan`` (an ONNX ``Scan``), so an exported step takes any number of objects."""
    if torch.compiler.is_exporting():
        from torch._higher_order_ops.scan import scan

        def unaliased(c: list[torch.Tensor], x: list[torch.Tensor] | None) -> tuple[list[torch.Tensor], ...]:
            c, y = fn(c, x or [])  # scan passes None without xs, and refuses outputs that alias the carry
            return c, [t.clone() for t in y]

        return scan(unaliased, carry, xs) if xs else scan(unaliased, carry, xs, length=length)
    ys: list[list[torch.Tensor]] = []
    for i in range(length):
        carry, y = fn(carry, [x[i] for x in xs])
        ys.append(y)
    return carry, [torch.stack(parts) for parts in zip(*ys, strict=True)]


def fuse_conv_bn_(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d (in registration order, the pattern of
    torchvision, timm and recvos modules) into that conv, in place. A BN with a built-in activation (timm's
    ``BatchNormAct2d``) is replaced by that activation, a plain BN by ``Identity``. Returns the number fused.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from recvos.models.packed_conv import FoldedActivation

    fused = 0
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if not (isinstance(conv, nn.Conv2d) and type(bn).__name__ in ("BatchNorm2d", "BatchNormAct2d")):
                continue
            if conv.out_channels != bn.num_features or not bn.track_running_stats or bn.training:
                continue
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            act = FoldedActivation(bn.drop, bn.act) if hasattr(bn, "act") else nn.Identity()
            setattr(parent, bn_name, act)
            fused += 1
    return fused
