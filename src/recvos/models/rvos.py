"""RVOS: recurrent network for multiple object video object segmentation (Ventura et al., CVPR 2019).

Encoder: a backbone (run once per frame, shared by all objects) whose features ``[f4, f8, f16, f32]`` are
projected (conv + BN) to the decoder's skip widths. Decoder: one ConvLSTM per level from f32 to f4
(coarse to fine); level l > 0 takes the previous level's hidden state, bilinearly upsampled to its size,
concatenated with its skip (as in RSIS); a 1x1 conv head gives one logit map at f4, bilinearly upsampled
to the input size.

Recurrences (``variant``):

- ``"S"`` spatial: slot i's ConvLSTM state at each level starts from slot i-1's state (same frame, same level).
- ``"T"`` temporal: slot i starts from its own state of the previous frame. Slots are independent, so they
  run in parallel, folded into the batch (N = B * O).
- ``"ST"`` both: the state comes from slot i-1 (spatial) and slot i's previous-frame hidden state is an
  extra input of the gate convolution.

``mode``: ``"one-shot"`` (each object's previous mask, resized, is an extra input channel of every level)
or ``"zero-shot"`` (no masks; ``max_objects`` slots and an objectness score per slot from the max-pooled
hidden states of all levels -> FC -> sigmoid). Zero-shot needs spatial recurrence (S or ST): without it the
slots are interchangeable and would all predict the same thing.

Widths: with ``hidden_size = h``, the skip projections are (h, h, h/2, h/4) and the ConvLSTM hidden sizes
(h, h/2, h/4, h/8) from f32 to f4 (the paper: h = 128).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from recvos.errors import RecvosError
from recvos.models.backbones import DEFAULT_BACKBONE, build_backbone
from recvos.models.base import RecurrentState, RecurrentVOS, StepOutput
from recvos.models.convlstm import ConvLSTMCell

__all__ = ["RVOS", "RVOSState", "VARIANTS", "MODES"]

VARIANTS = ("S", "T", "ST")
MODES = ("one-shot", "zero-shot")


@dataclass
class RVOSState(RecurrentState):
    """Per-level ConvLSTM state of every slot after the last frame, coarse (f32) to fine (f4).

    hidden[l], cell[l]: [B, O, C_l, H_l, W_l].
    """

    hidden: list[torch.Tensor]
    cell: list[torch.Tensor]


class RVOS(RecurrentVOS):
    """RVOS with a configurable backbone, recurrence variant and mode (see the module docs).

    Args:
        variant: "S", "T" or "ST".
        mode: "one-shot" or "zero-shot".
        backbone: a name from :func:`recvos.models.backbones.list_backbones`.
        backbone_weights: None, "imagenet" or a state-dict path (see :func:`build_backbone`).
        hidden_size: decoder width h (see the module docs).
        kernel_size: ConvLSTM kernel; skip_kernel: kernel of the skip projections.
        max_objects: slots in zero-shot mode.
        frozen_bn, freeze_stages: backbone freezing options.
        class_head: add an RSIS semantic class head (``num_classes`` logits per slot); off by default.
    """

    def __init__(
        self,
        variant: str = "ST",
        mode: str = "one-shot",
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | Path | None = None,
        hidden_size: int = 128,
        kernel_size: int = 3,
        skip_kernel: int = 3,
        max_objects: int = 10,
        frozen_bn: bool = False,
        freeze_stages: int = 0,
        class_head: bool = False,
        num_classes: int = 21,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise RecvosError(f"RVOS variant must be one of {VARIANTS} (got {variant!r})")
        if mode not in MODES:
            raise RecvosError(f"RVOS mode must be one of {MODES} (got {mode!r})")
        if mode == "zero-shot" and variant == "T":
            raise RecvosError("zero-shot RVOS needs spatial recurrence: use rvos-st or rvos-s (rvos-t slots "
                              "are interchangeable without masks)")
        if hidden_size < 8 or hidden_size % 8:
            raise RecvosError(f"RVOS hidden_size must be a positive multiple of 8 (got {hidden_size})")
        if max_objects < 1:
            raise RecvosError(f"max_objects must be >= 1 (got {max_objects})")
        self.name = f"rvos-{variant.lower()}"
        self.config = {
            "variant": variant, "mode": mode, "backbone": backbone,
            "backbone_weights": str(backbone_weights) if backbone_weights is not None else None,
            "hidden_size": hidden_size, "kernel_size": kernel_size, "skip_kernel": skip_kernel,
            "max_objects": max_objects, "frozen_bn": frozen_bn, "freeze_stages": freeze_stages,
            "class_head": class_head, "num_classes": num_classes,
        }
        self.variant = variant
        self.mode = mode
        self.one_shot = mode == "one-shot"
        self.uses_prev_masks = self.one_shot
        self.max_objects = max_objects

        self.backbone = build_backbone(backbone, backbone_weights, frozen_bn=frozen_bn, freeze_stages=freeze_stages)
        h = hidden_size
        self.hidden_dims = (h, h // 2, h // 4, h // 8)
        self.skip_dims = (h, h, h // 2, h // 4)
        in_dims = tuple(reversed(self.backbone.channels))  # f32 .. f4
        self.skips = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, cout, skip_kernel, padding=skip_kernel // 2, bias=False), nn.BatchNorm2d(cout))
            for cin, cout in zip(in_dims, self.skip_dims, strict=True)
        )
        mask_dim = 1 if self.one_shot else 0
        self.cells = nn.ModuleList(
            ConvLSTMCell(
                input_dim=(self.hidden_dims[i - 1] if i else 0) + mask_dim,
                hidden_dim=self.hidden_dims[i],
                kernel_size=kernel_size,
                extra_hidden=1 if variant == "ST" else 0,
                shared_dim=self.skip_dims[i],
            )
            for i in range(4)
        )
        self.mask_head = nn.Conv2d(self.hidden_dims[-1], 1, 1)
        pooled = sum(self.hidden_dims)
        self.objectness_head = None if self.one_shot else nn.Linear(pooled, 1)
        self.class_head = nn.Linear(pooled, num_classes) if class_head else None

    # ---------------------------------------------------------------------------------------------------
    def init_state(self, frame: torch.Tensor, masks: torch.Tensor | None) -> RVOSState:
        """frame [B, 3, H, W]; masks [B, O, H, W] (one-shot) or None (zero-shot: O = max_objects)."""
        if self.one_shot:
            if masks is None:
                raise ValueError("one-shot RVOS needs the first-frame masks [B, O, H, W]")
            num_objects = masks.shape[1]
        else:
            if masks is not None:
                raise ValueError("zero-shot RVOS takes masks=None (it finds up to max_objects objects)")
            num_objects = self.max_objects
        B = frame.shape[0]
        sizes = self.backbone.feature_sizes(*frame.shape[-2:])[::-1]
        hidden = [frame.new_zeros(B, num_objects, c, *hw) for c, hw in zip(self.hidden_dims, sizes, strict=True)]
        return RVOSState(num_objects=num_objects, hidden=hidden, cell=[t.clone() for t in hidden])

    def encode(self, frame: torch.Tensor) -> list[torch.Tensor]:
        """frame [B, 3, H, W] -> projected skips, coarse to fine: [B, skip_dims[l], H_l, W_l] (f32 .. f4)."""
        feats = self.backbone(frame)[::-1]
        return [proj(f) for proj, f in zip(self.skips, feats, strict=True)]

    def step(self, frame: torch.Tensor, state: RVOSState, prev_masks: torch.Tensor | None) -> StepOutput:
        """frame [B, 3, H, W]; prev_masks [B, O, H, W] (one-shot; ignored in zero-shot) -> StepOutput."""
        B, _, H, W = frame.shape
        nobj = state.num_objects
        skips = self.encode(frame)
        sizes = [tuple(s.shape[-2:]) for s in skips]
        if [tuple(t.shape[-2:]) for t in state.hidden] != sizes or state.hidden[0].shape[0] != B:
            raise ValueError(f"frame {tuple(frame.shape)} does not match the state (made for another size/batch)")
        shared = [cell.shared_gates(s) for cell, s in zip(self.cells, skips, strict=True)]
        masks: list[torch.Tensor | None] = [None] * 4
        if self.one_shot:
            if prev_masks is None or prev_masks.shape[:2] != (B, nobj):
                raise ValueError(f"one-shot RVOS needs prev_masks [B={B}, O={nobj}, H, W]")
            pm = prev_masks.to(frame.dtype)
            masks = [F.interpolate(pm, size=hw, mode="area") for hw in sizes]  # [B, O, H_l, W_l]

        if self.variant == "T":
            hs, cs = self._decode(
                shared, sizes,
                [None if m is None else m.reshape(B * nobj, 1, *m.shape[-2:]) for m in masks],
                [(h.flatten(0, 1), c.flatten(0, 1)) for h, c in zip(state.hidden, state.cell, strict=True)],
                extras=[()] * 4,
            )
            hs = [h.unflatten(0, (B, nobj)) for h in hs]
            cs = [c.unflatten(0, (B, nobj)) for c in cs]
        else:
            per_slot_h, per_slot_c = [], []
            spatial = [cell.init_state(frame, B, *hw) for cell, hw in zip(self.cells, sizes, strict=True)]
            for i in range(nobj):
                extras = [(t[:, i],) if self.variant == "ST" else () for t in state.hidden]
                h_i, c_i = self._decode(
                    shared, sizes, [None if m is None else m[:, i : i + 1] for m in masks], spatial, extras
                )
                spatial = list(zip(h_i, c_i, strict=True))
                per_slot_h.append(h_i)
                per_slot_c.append(c_i)
            hs = [torch.stack([s[level] for s in per_slot_h], 1) for level in range(4)]
            cs = [torch.stack([s[level] for s in per_slot_c], 1) for level in range(4)]

        logits = self.mask_head(hs[-1].flatten(0, 1))  # [N, 1, H/4, W/4]
        logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False).view(B, nobj, H, W)
        objectness, class_logits = self._slot_heads(hs, B, nobj, frame)
        return StepOutput(
            logits=logits,
            objectness=objectness,
            state=RVOSState(num_objects=nobj, hidden=hs, cell=cs),
            class_logits=class_logits,
        )

    def _decode(
        self,
        shared: list[torch.Tensor],
        sizes: list[tuple[int, int]],
        masks: list[torch.Tensor | None],
        states: list[tuple[torch.Tensor, torch.Tensor]],
        extras: list[tuple[torch.Tensor, ...]],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the 4 ConvLSTM levels for N items (N = B, or B * O folded): returns per-level h and c [N, C_l, ...]."""
        hs, cs = [], []
        for level, cell in enumerate(self.cells):
            parts = []
            if level:
                parts.append(F.interpolate(hs[-1], size=sizes[level], mode="bilinear", align_corners=False))
            if masks[level] is not None:
                parts.append(masks[level])
            x = None if not parts else parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            h, c = cell(x, states[level], extras[level], shared_gates=shared[level])
            hs.append(h)
            cs.append(c)
        return hs, cs

    def _slot_heads(
        self, hs: list[torch.Tensor], B: int, nobj: int, ref: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Objectness [B, O] (ones in one-shot mode) and optional class logits [B, O, K]."""
        if self.objectness_head is None and self.class_head is None:
            return ref.new_ones(B, nobj), None
        pooled = torch.cat([h.amax(dim=(-2, -1)) for h in hs], -1)  # [B, O, sum(C_l)]
        if self.objectness_head is None:
            objectness = ref.new_ones(B, nobj)
        else:
            objectness = torch.sigmoid(self.objectness_head(pooled)).squeeze(-1)
        class_logits = self.class_head(pooled) if self.class_head is not None else None
        return objectness, class_logits
