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
from recvos.models.state import RecurrentState

__all__ = ["RVOS", "RVOSState", "VARIANTS", "MAX_MEMORY", "check_memory_frames"]

VARIANTS = ("S", "T", "ST")
#: matching maps per object with ``reference=True``: best similarity to the object, and to the rest of the frame
MATCH_MAPS = 2
#: memory readout maps per object with ``memory > 0``: the object's own readout, the other objects' sum
MEMORY_MAPS = 2
#: the most frames an object's matching memory may hold (``memory``, in training and at inference)
MAX_MEMORY = 64


def check_memory_frames(memory: object, label: str = "memory") -> None:
    """A memory size to run with (1..MAX_MEMORY frames), or a one-line RecvosError naming ``label``."""
    if isinstance(memory, bool) or not isinstance(memory, int) or not 1 <= memory <= MAX_MEMORY:
        raise RecvosError(f"{label} {memory!r}: the frames each object remembers, 1..{MAX_MEMORY}")


def _one_for_all_objects(t: torch.Tensor) -> bool:
    """Whether a per-object state tensor [B, O, ...] holds one value for all objects (the expanded view
    :meth:`RVOS.init_state` makes of the reference embedding when they are given on the same frame): its
    work can be done once. Never while exporting (the graph takes any state)."""
    return t.shape[1] > 1 and t.stride(1) == 0 and not torch.compiler.is_exporting()


@dataclass
class RVOSState(RecurrentState):
    """Per-level ConvLSTM state of every slot after the last frame, coarse (f32) to fine (f4).

    hidden[l], cell[l]: [B, O, C_l, H_l, W_l].
    """

    hidden: list[torch.Tensor]
    cell: list[torch.Tensor]
    #: with ``reference=True``: each object's reference-frame embedding [B, O, E, h16, w16] and its mask
    #: there [B, O, h16 * w16] (soft, area-resized)
    ref_emb: torch.Tensor | None = None
    ref_mask: torch.Tensor | None = None
    #: with ``memory = K``: embeddings [B, O, K, E, P] and the object's masks [B, O, K, P] of its last K
    #: frames (oldest first; ``mem_valid`` [B, O, K] says which entries are filled), and the embedding of the
    #: last frame seen [B, O, E, P], written into the memory with its fed-back mask on the next step
    mem_key: torch.Tensor | None = None
    mem_val: torch.Tensor | None = None
    mem_valid: torch.Tensor | None = None
    last_key: torch.Tensor | None = None


class RVOS(RecurrentVOS):
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
        if memory < 0 or memory > MAX_MEMORY:
            raise RecvosError(f"memory must be 0..{MAX_MEMORY} frames (got {memory})")
        if mem_top_k < 1:
            raise RecvosError(f"mem_top_k must be >= 1 (got {mem_top_k})")
        if ref_dim < 1:
            raise RecvosError(f"ref_dim must be >= 1 (got {ref_dim})")
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
        self.memory = memory
        self.mem_top_k = mem_top_k
        self.variant = variant
        self.mode = mode
        self.one_shot = mode == "one-shot"
        self.uses_prev_masks = self.one_shot or memory > 0  # zero-shot memory stores the fed-back masks
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
        mask_dim = (
            (1 if self.one_shot else 0) + (MATCH_MAPS if reference else 0) + (MEMORY_MAPS if memory else 0)
        )
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
        if self.ref_embed is not None:
            emb = self._embed(self.backbone(frame)[2])  # [B, E, h, w]
            if self.reference:
                m = F.interpolate(masks.to(emb.dtype), size=emb.shape[-2:], mode="area")
                state.ref_emb = emb.unsqueeze(1).expand(
                    -1, num_objects, -1, -1, -1
                )  # a view: one copy per frame
                state.ref_mask = m.flatten(2)
            if self.memory:
                E, P = emb.shape[1], emb.shape[2] * emb.shape[3]
                state.mem_key = emb.new_zeros(B, num_objects, self.memory, E, P)
                state.mem_val = emb.new_zeros(B, num_objects, self.memory, P)
                state.mem_valid = emb.new_zeros(B, num_objects, self.memory)
                state.last_key = emb.flatten(2).unsqueeze(1).expand(-1, num_objects, -1, -1)
        return state

    def encode(self, frame: torch.Tensor) -> list[torch.Tensor]:
        """frame [B, 3, H, W] -> projected skips, coarse to fine: [B, skip_dims[l], H_l, W_l] (f32 .. f4)."""
        return self._encode(frame)[0]

    def _encode(self, frame: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.backbone(frame)
        skips = [proj(f) for proj, f in zip(self.skips, feats[::-1], strict=True)]
        return skips, feats

    def _embed(self, f16: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.ref_embed(f16), dim=1)

    def match(self, f16: torch.Tensor, state: RVOSState) -> torch.Tensor:
        """Current f16 features [B, C, h, w] -> per-object [best fg, best bg] similarity maps [B, O, 2, h, w].

        A reference pixel counts as object to the degree of its (soft) mask: its similarity is lowered by
        2 * (1 - mask) for the object map (2 * mask for the background map), which removes it entirely at
        mask 0, since cosine similarities lie in [-1, 1].
        """
        return self._match(self._embed(f16), state)

    def _match(self, q: torch.Tensor, state: RVOSState) -> torch.Tensor:
        B, _, h, w = q.shape
        ref = state.ref_emb
        if _one_for_all_objects(ref):
            ref = ref[:, :1]  # one reference embedding for all objects: match it once
        sim = torch.einsum("bep,boeq->boqp", q.flatten(2), ref.flatten(3).to(q.dtype))  # [B, O or 1, Q, P]
        m = state.ref_mask.to(q.dtype).unsqueeze(-1)  # [B, O, Q, 1]
        fg = (sim - 2 * (1 - m)).amax(2)
        bg = (sim - 2 * m).amax(2)
        return torch.stack([fg, bg], 2).view(B, -1, 2, h, w)

    def remember(self, state: RVOSState, prev_masks: torch.Tensor, size: tuple[int, int]) -> RVOSState:
        """The state with the last frame (``state.last_key``) and its fed-back masks [B, O, H, W] (area-resized
        to the memory's ``size`` unless already at it) written into each object's memory, the oldest entry
        dropped."""
        val = prev_masks.to(state.mem_val.dtype)
        if tuple(val.shape[-2:]) != tuple(size):
            val = F.interpolate(val, size=size, mode="area")
        val = val.flatten(2)  # [B, O, P]
        keep = slice(1, None)
        return replace(
            state,
            mem_key=torch.cat(
                [state.mem_key[:, :, keep], state.last_key.unsqueeze(2).to(state.mem_key.dtype)], 2
            ),
            mem_val=torch.cat([state.mem_val[:, :, keep], val.unsqueeze(2)], 2),
            mem_valid=torch.cat(
                [state.mem_valid[:, :, keep], state.mem_valid.new_ones(*val.shape[:2], 1)], 2
            ),
        )

    def read_memory(self, q: torch.Tensor, state: RVOSState) -> torch.Tensor:
        """Embeddings of the current frame [B, E, h, w] -> per-object [own readout, others' readout] maps
        [B, O, 2, h, w]: top-k softmax attention over each object's reference and memory pixels, carrying the
        object's mask values.

        Objects share their keys in the usual case (all given on the same frame: one reference embedding,
        and memories filled at the same steps); then similarities and top-k are computed once for all of them
        (:meth:`_keys_shared`) and only the mask values are read per object: the same result, O times less
        work."""
        B, E, h, w = q.shape
        nobj = state.mem_key.shape[1]
        n = 1 if self._keys_shared(state) else nobj  # objects whose keys are matched
        keys, vals, valid = (
            state.mem_key[:, :n],
            state.mem_val,
            state.mem_valid[:, :n],
        )  # [B, n, K, E, P], [B, O, K, P], [B, n, K]
        if state.ref_emb is not None:  # the reference frame is always remembered
            keys = torch.cat([state.ref_emb[:, :n].flatten(3).unsqueeze(2), keys], 2)
            vals = torch.cat([state.ref_mask.unsqueeze(2), vals], 2)
            valid = torch.cat([valid.new_ones(B, n, 1), valid], 2)
        keys, vals = keys.to(q.dtype), vals.to(q.dtype).flatten(2)
        P = keys.shape[-1]
        sim = torch.einsum("beq,boken->boqkn", q.flatten(2), keys).flatten(3)  # [B, n, Q, (1+K)P]
        invalid = valid < 0.5
        if torch.compiler.is_exporting() or bool(invalid.any()):  # the memory is full after K frames
            sim = sim.masked_fill(
                invalid.repeat_interleave(P, 2)[:, :, None], float("-inf")
            )  # [B, n, 1, (1+K)P]
        k = min(self.mem_top_k, sim.shape[-1])
        top, idx = sim.topk(k, dim=-1)  # [B, n, Q, k]
        weight = torch.softmax(top * self.mem_log_scale.exp(), dim=-1)
        picked = vals.unsqueeze(2).expand(-1, -1, h * w, -1).gather(-1, idx.expand(-1, nobj, -1, -1))
        own = (weight * picked).sum(-1)  # [B, O, Q]
        others = own.sum(1, keepdim=True) - own
        return torch.stack([own, others], 2).view(B, nobj, 2, h, w)

    @staticmethod
    def _keys_shared(state: RVOSState) -> bool:
        """Whether all objects attend to the same keys: more than one object, one reference embedding for all
        (the expanded view :meth:`init_state` makes when they are given on the same frame), and the same
        memory entries filled (each step writes the same frame's keys for every object, so filled entries
        hold the same keys). Objects added or re-prompted later break it until their memory is full again."""
        if state.mem_key.shape[1] < 2 or torch.compiler.is_exporting():
            return False
        if state.ref_emb is not None and not _one_for_all_objects(state.ref_emb):
            return False
        valid = state.mem_valid
        return bool((valid == valid[:, :1]).all())

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
            zeros = w.new_zeros(w.shape[0], want - w.shape[1], *w.shape[2:])
            out[key] = torch.cat([w[:, :at], zeros, w[:, at:]], 1)
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

        if self.ref_embed is not None:
            q = self._embed(feats[2])
            if self.reference:
                if state.ref_emb is None:
                    raise RecvosError(
                        "this RVOS state has no reference (build it with this model's init_state)"
                    )
                maps.append(self._match(q, state))  # [B, O, 2, h16, w16]
            if self.memory:
                if state.mem_key is None:
                    raise RecvosError("this RVOS state has no memory (build it with this model's init_state)")
                state = self.remember(state, resized(tuple(q.shape[-2:])), tuple(q.shape[-2:]))
                maps.append(self.read_memory(q, state))
                state = replace(state, last_key=q.flatten(2).unsqueeze(1).expand(-1, nobj, -1, -1))
        parts: list[list[torch.Tensor]] = [[] for _ in sizes]
        if self.one_shot:  # the previous masks, area-resized to each level: [B, O, 1, H_l, W_l]
            for level, hw in enumerate(sizes):
                parts[level].append(resized(hw).unsqueeze(2))
        if maps:
            flat = torch.cat(maps, 2).flatten(0, 1)
            for level, hw in enumerate(sizes):
                up = F.interpolate(flat, size=hw, mode="bilinear", align_corners=False)
                parts[level].append(up.unflatten(0, (B, nobj)).to(frame.dtype))
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
