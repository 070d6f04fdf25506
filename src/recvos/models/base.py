"""The recurrent interface shared by every recvos model (RVOS and S2S).

A model is used in three calls:

- ``state = model.init_state(frame0, masks0)`` — frame0 [B, 3, H, W] float RGB in [0, 1]; masks0
  [B, O, H, W] float {0,1} for one-shot, or ``None`` for zero-shot (then O = ``model.max_objects``).
- ``out = model.step(frame, state, prev_masks)`` — one frame; ``prev_masks`` [B, O, H, W] is the previous
  frame's (ground-truth or predicted) per-object masks, or ``None`` for models that do not take them.
  Returns :class:`StepOutput` (logits [B, O, H, W] at the input size, objectness [B, O], the new state).
- ``model.forward_clip(frames, first_masks, teacher_masks)`` — the training unroll, built on ``step`` so
  training and inference share one code path.

Every model is an ``nn.Module`` subclass of :class:`RecurrentVOS`; ``model.name`` and ``model.config``
(the keyword arguments it was built with) are what the factory stores in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn


@dataclass
class RecurrentState:
    """Base class of model states: a dataclass of tensors (or lists/tuples of tensors).

    ``num_objects`` is O. Subclasses add their tensors. ``map_tensors`` lets callers move or slice a state
    without knowing its fields (e.g. ``state.map_tensors(lambda t: t.to("cuda"))``).
    """

    num_objects: int

    def map_tensors(self, fn) -> RecurrentState:
        def apply(v):
            if isinstance(v, torch.Tensor):
                return fn(v)
            if isinstance(v, (list, tuple)):
                return type(v)(apply(x) for x in v)
            return v

        return type(self)(**{f.name: apply(getattr(self, f.name)) for f in fields(self)})

    def detach(self) -> RecurrentState:
        """Cut the autograd graph (truncated back-propagation through time)."""
        return self.map_tensors(lambda t: t.detach())


@dataclass
class StepOutput:
    logits: torch.Tensor  # [B, O, H, W] mask logits at the input size
    objectness: torch.Tensor  # [B, O] probability that slot o holds an object
    state: RecurrentState
    class_logits: torch.Tensor | None = None  # [B, O, K] optional semantic class logits (RSIS head)


@dataclass
class ClipOutput:
    logits: torch.Tensor  # [B, T, O, H, W]
    objectness: torch.Tensor  # [B, T, O]
    class_logits: torch.Tensor | None = None  # [B, T, O, K] when the model has a class head


class RecurrentVOS(nn.Module):
    """Base class: subclasses implement ``init_state`` and ``step``; ``forward_clip`` is shared."""

    name: str = "recurrent-vos"
    #: True if ``step`` consumes the previous frame's masks (one-shot RVOS, S2S with the ablation switch).
    uses_prev_masks: bool = True
    #: Number of slots used in zero-shot mode.
    max_objects: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}
        #: set by :meth:`optimize_for_inference`; such a model can no longer be trained or saved
        self.inference_only = False

    def optimize_for_inference(self, channels_last: bool = True, fuse_batchnorm: bool = True) -> RecurrentVOS:
        """Make this model faster for inference, in place: eval mode, BatchNorm folded into the preceding
        convolutions, channels-last weights (faster oneDNN convolutions on CPU). Outputs are unchanged up
        to float rounding. Afterwards the model cannot be trained (``train()`` raises) nor saved (its
        state dict lacks the BatchNorm entries): optimise a copy, keep the original for checkpoints.
        """
        self.eval()
        if fuse_batchnorm:
            fuse_conv_bn_(self)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.inference_only = True
        return self

    def train(self, mode: bool = True) -> RecurrentVOS:
        if mode and getattr(self, "inference_only", False):
            raise RuntimeError(f"{self.name} was optimized for inference and cannot be trained")
        return super().train(mode)

    def init_state(self, frame: torch.Tensor, masks: torch.Tensor | None) -> RecurrentState:  # pragma: no cover
        raise NotImplementedError

    def step(
        self, frame: torch.Tensor, state: RecurrentState, prev_masks: torch.Tensor | None
    ) -> StepOutput:  # pragma: no cover
        raise NotImplementedError

    def forward_clip(
        self,
        frames: torch.Tensor,
        first_masks: torch.Tensor | None,
        teacher_masks: torch.Tensor | None = None,
        include_first: bool = True,
    ) -> ClipOutput:
        """Unroll over a clip.

        frames [B, T, 3, H, W]; first_masks [B, O, H, W] or None (zero-shot); teacher_masks
        [B, T, O, H, W] or None. With teacher masks, frame t receives ``teacher_masks[:, t-1]`` as its
        previous masks (teacher forcing); without, it receives the model's own sigmoid prediction of
        frame t-1 (RVOS "Mask-ST+", gradients flow through it). Frame 0 is segmented too (with the first
        masks as previous masks) when ``include_first``; its output is index 0 of the result.
        """
        B, T = frames.shape[:2]
        state = self.init_state(frames[:, 0], first_masks)
        prev = first_masks
        if prev is None and self.uses_prev_masks:
            prev = frames.new_zeros(B, state.num_objects, *frames.shape[-2:])
        logits, objectness, class_logits = [], [], []
        for t in range(0 if include_first else 1, T):
            out = self.step(frames[:, t], state, prev)
            state = out.state
            logits.append(out.logits)
            objectness.append(out.objectness)
            if out.class_logits is not None:
                class_logits.append(out.class_logits)
            if teacher_masks is not None:
                prev = teacher_masks[:, t]
            else:
                prev = torch.sigmoid(out.logits)
        return ClipOutput(
            logits=torch.stack(logits, 1),
            objectness=torch.stack(objectness, 1),
            class_logits=torch.stack(class_logits, 1) if class_logits else None,
        )


def fuse_conv_bn_(module: nn.Module) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d (in registration order, the pattern of
    torchvision, timm and recvos modules) into that conv, in place. A BN with a built-in activation (timm's
    ``BatchNormAct2d``) is replaced by that activation, a plain BN by ``Identity``. Returns the number fused.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = 0
    for parent in list(module.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if not (isinstance(conv, nn.Conv2d) and type(bn).__name__ in ("BatchNorm2d", "BatchNormAct2d")):
                continue
            if conv.out_channels != bn.num_features or not bn.track_running_stats or bn.training:
                continue
            setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
            act = nn.Sequential(bn.drop, bn.act) if hasattr(bn, "act") else nn.Identity()
            setattr(parent, bn_name, act)
            fused += 1
    return fused
