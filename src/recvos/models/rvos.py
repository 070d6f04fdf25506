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

First-frame reference (``reference=True``, one-shot only; an addition to the paper): RVOS only ever sees
its own last mask, so once it drifts nothing pulls it back. With the reference, the frame where an object
is given (its "reference frame") is embedded once (backbone f16 features -> 1x1 conv -> L2-normalised,
``ref_dim`` channels) with that object's mask, and every later frame is matched against it at f16
(global nearest-neighbour matching, as in FEELVOS): for each pixel, the best cosine similarity to any
pixel of the object and to any pixel of the rest of the reference frame. These 2 maps per object,
resized to each level, join the previous mask as extra input channels of every ConvLSTM level. The
matching costs O * (h16 * w16)^2 * ref_dim multiply-adds per frame (1.3 M per object at 240x427).
:meth:`RVOS.adapt_state_dict` turns a checkpoint without reference into a starting point for one with
it (the new input channels start at zero, so the warm-started model first computes exactly what the
old one did).

Matching memory (``memory=K``; an addition to the paper, after STM/XMem): the reference alone cannot
follow an object whose appearance changes, and the previous mask alone drifts. Each object keeps a bounded
memory of the last K frames it was segmented on: their f16 embeddings (``ref_embed``) and the object's mask
there as the loop fed it back (ground truth or prompt where known, the model's own probabilities elsewhere).
Every pixel of the current frame attends to the object's memory and, with ``reference``, its reference frame
(top-k softmax over cosine similarity with a learned temperature) and reads out the object's mask value: a
soft "this pixel is the object" map. Objects compete: each object also gets the sum of the other objects'
readouts. These 2 maps join the inputs of every ConvLSTM level. Memory size is fixed (K frames per object),
so memory use does not grow with the video's length; an object added later starts with its own frame.
Zero-shot models remember the objects they discovered the same way (their own masks; no reference).

Local f8 matching (``local_radius=r > 0``; an addition, after FEELVOS's local matching): the f16 readout is
coarse (a 16x16 pixel cell per key), and thin or small objects fall between its cells. With it, the f8 features
are embedded too (1x1 conv -> L2-normalised, ``local_dim`` channels) and every f8 pixel attends to the
(2r+1)^2 pixels around its own position in the last frame (softmax, learned temperature) and reads the fed-back
mask of each object there: the last mask moved by appearance, as optical flow would move it, at twice the f16
resolution. These 2 maps per object (own, others' sum) join the inputs of the f8 and f4 ConvLSTM levels. Cost:
``local_dim * (2r+1)^2`` multiply-adds per f8 pixel, once for all objects.

Learned memory values (``value_dim=V``, with ``memory``; after STM's value embeddings): the readout above
carries only whether each remembered pixel was the object. With it, the same top-k attention also carries V
learned channels per object, ``relu(conv3x3(key) + conv3x3(mask))`` of each remembered entry (what the object
looked like there, not only where it was); they join the f32 and f16 levels. They are computed at read time
from the keys and masks the memory already holds, so the state is what it is without them.

Widths: with ``hidden_size = h``, the skip projections are (h, h, h/2, h/4) and the ConvLSTM hidden sizes
(h, h/2, h/4, h/8) from f32 to f4 (the paper: h = 128).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from recvos.errors import RecvosError
from recvos.models.backbones import DEFAULT_BACKBONE, build_backbone
from recvos.models.base import MODES, RecurrentVOS, StepOutput, scan_objects
from recvos.models.convlstm import ConvLSTMCell
from recvos.models.memory import (
    LOCAL_MAPS,
    MatchingMemory,
    MatchingState,
    insert_zero_columns,
    matching_options,
)
from recvos.models.state import RecurrentState

__all__ = ["RVOS", "RVOSState", "VARIANTS"]

VARIANTS = ("S", "T", "ST")


@dataclass
class RVOSState(MatchingState, RecurrentState):
    """Per-level ConvLSTM state of every slot after the last frame, coarse (f32) to fine (f4), with the
    fields of the reference and the memory (:class:`~recvos.models.memory.MatchingState`).

    hidden[l], cell[l]: [B, O, C_l, H_l, W_l].
    """

    hidden: list[torch.Tensor]
    cell: list[torch.Tensor]


class RVOS(MatchingMemory, RecurrentVOS):
    """RVOS with a configurable backbone, recurrence variant and mode (see the module docs).

    Its backbone sees only the frame (``accepts_features``), so it can train from cached features.

    Args:
        variant: "S", "T" or "ST".
        mode: "one-shot" or "zero-shot".
        backbone: a name from :func:`recvos.models.backbones.list_backbones`.
        backbone_weights: None, "imagenet" or a state-dict path (see :func:`build_backbone`).
        hidden_size: decoder width h (see the module docs).
        kernel_size: ConvLSTM kernel; skip_kernel: kernel of the skip projections.
        max_objects: slots in zero-shot mode.
        frozen_bn, freeze_stages: backbone freezing options.
        reference: match every frame against each object's reference frame (see the module docs).
        ref_dim: channels of the reference embedding.
        memory: K, the frames each object remembers (besides its reference; 0: no memory; see the module docs).
        mem_top_k: memory pixels each pixel attends to (top-k softmax).
        mem_every: keep one memory entry every this many frames (the newest entry always holds the last
            frame; 1: every frame; weights do not depend on it).
        local_radius: r, the window radius of the local f8 matching (0: off; see the module docs).
        local_dim: channels of the local f8 embedding.
        value_dim: V, channels of the learned memory values read into the f32 and f16 levels (0: off; needs
            ``memory``; see the module docs).
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
        reference: bool = False,
        ref_dim: int = 64,
        memory: int = 0,
        mem_top_k: int = 20,
        mem_every: int = 1,
        local_radius: int = 0,
        local_dim: int = 32,
        value_dim: int = 0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise RecvosError(f"RVOS variant must be one of {VARIANTS} (got {variant!r})")
        if mode not in MODES:
            raise RecvosError(f"RVOS mode must be one of {MODES} (got {mode!r})")
        if mode == "zero-shot" and variant == "T":
            raise RecvosError(
                "zero-shot RVOS needs spatial recurrence: use rvos-st or rvos-s (rvos-t slots "
                "are interchangeable without masks)"
            )
        if hidden_size < 8 or hidden_size % 8:
            raise RecvosError(f"RVOS hidden_size must be a positive multiple of 8 (got {hidden_size})")
        if reference and mode != "one-shot":
            raise RecvosError("reference=True needs mode='one-shot' (zero-shot has no reference masks)")
        matching_options(reference, memory, mem_top_k, ref_dim, mem_every, local_radius, local_dim, value_dim)
        if max_objects < 1:
            raise RecvosError(f"max_objects must be >= 1 (got {max_objects})")
        self.name = f"rvos-{variant.lower()}"
        self.accepts_features = True
        self.config = {
            "variant": variant,
            "mode": mode,
            "backbone": backbone,
            "backbone_weights": str(backbone_weights) if backbone_weights is not None else None,
            "hidden_size": hidden_size,
            "kernel_size": kernel_size,
            "skip_kernel": skip_kernel,
            "max_objects": max_objects,
            "frozen_bn": frozen_bn,
            "freeze_stages": freeze_stages,
        }
        if reference:  # only when on, so checkpoints of models without it keep their exact config
            self.config.update(reference=True, ref_dim=ref_dim)
        if memory:
            self.config.update(memory=memory, mem_top_k=mem_top_k)
            if mem_every != 1:
                self.config.update(mem_every=mem_every)
        if local_radius:
            self.config.update(local_radius=local_radius, local_dim=local_dim)
        if value_dim:
            self.config.update(value_dim=value_dim)
        self.local_radius = local_radius
        self.value_dim = value_dim
        self.mem_every = mem_every
        self.memory = memory
        self.mem_top_k = mem_top_k
        self.variant = variant
        self.mode = mode
        self.one_shot = mode == "one-shot"
        # zero-shot memory and local matching read the fed-back masks
        self.uses_prev_masks = self.one_shot or memory > 0 or local_radius > 0
        self.max_objects = max_objects

        self.backbone = build_backbone(
            backbone, backbone_weights, frozen_bn=frozen_bn, freeze_stages=freeze_stages
        )
        h = hidden_size
        self.hidden_dims = (h, h // 2, h // 4, h // 8)
        self.skip_dims = (h, h, h // 2, h // 4)
        in_dims = tuple(reversed(self.backbone.channels))  # f32 .. f4
        self.skips = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(cin, cout, skip_kernel, padding=skip_kernel // 2, bias=False), nn.BatchNorm2d(cout)
            )
            for cin, cout in zip(in_dims, self.skip_dims, strict=True)
        )
        self.reference = reference
        # the embedding of the reference matching and of the memory
        self.ref_embed = nn.Conv2d(self.backbone.channels[2], ref_dim, 1) if reference or memory else None
        # softmax temperature of the memory readout, as a log scale (cosine similarity * 20 at init)
        self.mem_log_scale = nn.Parameter(torch.tensor(3.0)) if memory else None
        # the local f8 matching: its embedding and softmax temperature (cosine similarity * 20 at init)
        self.local_embed = nn.Conv2d(self.backbone.channels[1], local_dim, 1) if local_radius else None
        self.local_log_scale = nn.Parameter(torch.tensor(3.0)) if local_radius else None
        # the learned memory values (STM-style): a 3x3 conv of each entry's key and one of its mask, summed
        self.value_key = nn.Conv2d(ref_dim, value_dim, 3, padding=1) if value_dim else None
        self.value_mask = nn.Conv2d(1, value_dim, 3, padding=1, bias=False) if value_dim else None
        mask_dim = (1 if self.one_shot else 0) + self.matching_maps
        # the local maps join the f8 and f4 levels (2 and 3, coarse to fine), the values the f32 and f16 levels
        local_maps = LOCAL_MAPS if local_radius else 0
        mask_dims = [mask_dim + (local_maps if i >= 2 else value_dim) for i in range(4)]
        self.cells = nn.ModuleList(
            ConvLSTMCell(
                input_dim=(self.hidden_dims[i - 1] if i else 0) + mask_dims[i],
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

    # ---------------------------------------------------------------------------------------------------
    def init_state(self, frame: torch.Tensor, masks: torch.Tensor | None) -> RVOSState:
        """frame [B, 3, H, W]; masks [B, O, H, W] (one-shot) or None (zero-shot: O = max_objects)."""
        if self.one_shot:
            if masks is None:
                raise RecvosError(
                    "one-shot RVOS needs the first-frame masks [B, O, H, W]; give masks or use a zero-shot model"
                )
            num_objects = masks.shape[1]
        else:
            if masks is not None:
                raise RecvosError(
                    "zero-shot RVOS takes no masks (it finds up to max_objects objects); use a one-shot model to follow given objects"
                )
            num_objects = self.max_objects
        B = frame.shape[0]
        sizes = self.backbone.feature_sizes(*frame.shape[-2:])[::-1]
        hidden = [
            frame.new_zeros(B, num_objects, c, *hw) for c, hw in zip(self.hidden_dims, sizes, strict=True)
        ]
        state = RVOSState(num_objects=num_objects, hidden=hidden, cell=[t.clone() for t in hidden])
        if self.ref_embed is not None or self.local_embed is not None:
            feats = self.backbone(frame)
            fields = {}
            if self.ref_embed is not None:
                fields.update(self._init_matching(self._embed(feats[2]), masks, num_objects))
            if self.local_embed is not None:
                fields.update(self._init_local(feats[1], num_objects))
            state = replace(state, **fields)
        return state

    def encode(self, frame: torch.Tensor) -> list[torch.Tensor]:
        """frame [B, 3, H, W] -> projected skips, coarse to fine: [B, skip_dims[l], H_l, W_l] (f32 .. f4)."""
        return self._encode(frame)[0]

    def _encode(self, frame: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.backbone(frame)
        skips = [proj(f) for proj, f in zip(self.skips, feats[::-1], strict=True)]
        return skips, feats

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of the same RVOS with fewer matching inputs (no ``reference``, or no ``memory``) -> one
        for this model (warm start): the missing input channels (``MATCH_MAPS``, ``MEMORY_MAPS``) are inserted
        with zero weights after the ones the checkpoint has, in every level's gate convolution, so the
        warm-started model first computes exactly what the old one did; new modules keep their initialisation."""
        out = dict(state_dict)
        for level, cell in enumerate(self.cells):
            key = f"cells.{level}.conv.weight"
            w = state_dict.get(key)
            want = cell.conv.weight.shape[1]
            if w is None or w.shape[1] >= want:
                continue
            recurrent = self.hidden_dims[level] * (1 + cell.extra_hidden)
            at = w.shape[1] - recurrent  # after [upsampled hidden, mask, the maps the checkpoint has]
            out[key] = insert_zero_columns(w, at, want)
        return out

    def step(self, frame: torch.Tensor, state: RVOSState, prev_masks: torch.Tensor | None) -> StepOutput:
        """frame [B, 3, H, W]; prev_masks [B, O, H, W] (one-shot; ignored in zero-shot) -> StepOutput."""
        B, _, H, W = frame.shape
        nobj = state.num_objects
        skips, feats = self._encode(frame)
        sizes = [tuple(s.shape[-2:]) for s in skips]
        if [tuple(t.shape[-2:]) for t in state.hidden] != sizes or state.hidden[0].shape[0] != B:
            raise RecvosError(
                f"frame {tuple(frame.shape)} does not match the state (made for another size/batch)"
            )
        shared = [cell.shared_gates(s) for cell, s in zip(self.cells, skips, strict=True)]
        masks: list[torch.Tensor | None] = [None] * 4
        maps = []  # per-object maps at f16 joining the inputs of every level: [B, O, C, h16, w16]
        if self.uses_prev_masks:
            if prev_masks is None or prev_masks.shape[:2] != (B, nobj):
                raise RecvosError(f"{self.name} ({self.mode}) needs prev_masks [B={B}, O={nobj}, H, W]")
            pm = prev_masks.to(frame.dtype)
            by_size: dict[tuple[int, int], torch.Tensor] = {}

            def resized(hw: tuple[int, int]) -> torch.Tensor:  # pm area-resized, once per size
                if hw not in by_size:
                    by_size[hw] = F.interpolate(pm, size=hw, mode="area")
                return by_size[hw]

        values = None
        if self.ref_embed is not None:
            matched, state = self._matching_maps(feats[2], state, resized)
            if self.value_dim:  # [B, O, value_dim, h16, w16] after the maps
                matched, values = matched.split([self.matching_maps, self.value_dim], 2)
            maps.append(matched)  # [B, O, matching_maps, h16, w16]
        local = None
        if self.local_embed is not None:  # [B, O, LOCAL_MAPS, h8, w8]
            local, state = self._local_maps(feats[1], state, resized(tuple(feats[1].shape[-2:])))
        parts: list[list[torch.Tensor]] = [[] for _ in sizes]

        def spread(m: torch.Tensor, levels: range) -> None:  # maps [B, O, C, h, w] -> inputs of these levels
            flat = m.flatten(0, 1)
            for level in levels:
                hw = sizes[level]
                if tuple(flat.shape[-2:]) != hw:  # (bilinear to the same size would be the identity)
                    up = F.interpolate(flat, size=hw, mode="bilinear", align_corners=False)
                else:
                    up = flat
                parts[level].append(up.unflatten(0, (B, nobj)).to(frame.dtype))

        if self.one_shot:  # the previous masks, area-resized to each level: [B, O, 1, H_l, W_l]
            for level, hw in enumerate(sizes):
                parts[level].append(resized(hw).unsqueeze(2))
        if maps:
            spread(torch.cat(maps, 2), range(4))
        if local is not None:  # the f8 and f4 levels only
            spread(local, range(2, 4))
        if values is not None:  # the f32 and f16 levels only
            spread(values, range(2))
        masks = [torch.cat(p, 2) if p else None for p in parts]

        if self.variant == "T":
            hs, cs = self._decode(
                shared,
                sizes,
                [None if m is None else m.flatten(0, 1) for m in masks],
                [(h.flatten(0, 1), c.flatten(0, 1)) for h, c in zip(state.hidden, state.cell, strict=True)],
                extras=[()] * 4,
            )
            hs = [h.unflatten(0, (B, nobj)) for h in hs]
            cs = [c.unflatten(0, (B, nobj)) for c in cs]
        else:
            hs, cs = self._decode_slots(shared, sizes, masks, state, frame)
            hs = [h.movedim(0, 1) for h in hs]
            cs = [c.movedim(0, 1) for c in cs]

        logits = self.mask_head(hs[-1].flatten(0, 1))  # [N, 1, H/4, W/4]
        logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False).view(B, nobj, H, W)
        objectness = self._objectness(hs, B, nobj, frame)
        return StepOutput(
            logits=logits,
            objectness=objectness,
            state=replace(state, hidden=hs, cell=cs),
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
            h, c = cell(parts or None, states[level], extras[level], shared_gates=shared[level])
            hs.append(h)
            cs.append(c)
        return hs, cs

    def _decode_slots(
        self,
        shared: list[torch.Tensor],
        sizes: list[tuple[int, int]],
        masks: list[torch.Tensor | None],
        state: RVOSState,
        frame: torch.Tensor,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Spatial recurrence (S, ST): the slots one after the other, slot i's ConvLSTM state starting from
        slot i-1's (ST: slot i's previous-frame hidden state is an extra input). masks [B, O, C, H_l, W_l]
        per level (or None) -> per-level h and c [O, B, C_l, H_l, W_l]."""
        B = frame.shape[0]
        given = [level for level, m in enumerate(masks) if m is not None]
        xs = [masks[level].movedim(1, 0) for level in given]
        if self.variant == "ST":
            xs += [h.movedim(1, 0) for h in state.hidden]

        def slot(
            carry: list[torch.Tensor], x: list[torch.Tensor]
        ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            slot_masks: list[torch.Tensor | None] = [None] * 4
            for level, m in zip(given, x, strict=False):
                slot_masks[level] = m
            extras = [(h,) for h in x[len(given) :]] if self.variant == "ST" else [()] * 4
            hs, cs = self._decode(
                shared, sizes, slot_masks, list(zip(carry[:4], carry[4:], strict=True)), extras
            )
            return [*hs, *cs], [*hs, *cs]

        spatial = [cell.init_state(frame, B, *hw) for cell, hw in zip(self.cells, sizes, strict=True)]
        _, ys = scan_objects(slot, [h for h, _ in spatial] + [c for _, c in spatial], xs, state.num_objects)
        return ys[:4], ys[4:]

    def _objectness(self, hs: list[torch.Tensor], B: int, nobj: int, ref: torch.Tensor) -> torch.Tensor:
        """Objectness [B, O]: ones in one-shot mode, else max-pooled hidden states of all levels -> FC -> sigmoid."""
        if self.objectness_head is None:
            return ref.new_ones(B, nobj)
        pooled = torch.cat([h.amax(dim=(-2, -1)) for h in hs], -1)  # [B, O, sum(C_l)]
        return torch.sigmoid(self.objectness_head(pooled)).squeeze(-1)
