"""S2S: sequence-to-sequence video object segmentation (Xu et al., YouTube-VOS, ECCV 2018).

- Initializer: a second backbone over the 4-channel input [RGB frame 0, mask 0] (the 4th input filter of
  the first conv is the mean of the RGB filters, see ``extra_channel_init``) + two 1x1 convs -> (c0, h0)
  of the ConvLSTM, at stride 32.
- Encoder: the backbone on each frame (run once per frame, shared by all objects) + one 1x1 conv.
- ConvLSTM (3x3, ReLU state activation) at stride 32.
- Decoder: 5 stages, each a bilinear x2 upsampling and a 3x3 conv + ReLU, back to the input size; the
  first three take skips from the encoder (f16, f8, f4, projected by 1x1 convs); a 1x1 conv gives the logit.
- Objects are independent sequences folded into the batch (N = B * O), so outputs are equivariant to
  object permutations.

Ablation switches of the paper: ``use_initializer=False`` replaces the initializer by the first mask itself
as the hidden state (h0 = mask resized to stride 32 on every channel, c0 = 0); ``prev_mask_input=True``
feeds the previous frame's mask (resized to stride 32) to the encoder conv, after the shared backbone.
S2S is semi-supervised only (no zero-shot mode).

Matching (an option, off in the paper's model): ``reference=True`` and/or ``memory=K`` give S2S the
first-frame reference and the bounded matching memory of RVOS (:mod:`recvos.models.memory`, same embedding of
the f16 features, same top-k readout with objects competing). Their per-object maps at f16 join the input of
the ConvLSTM (resized to stride 32) and of the first decoder stage (f16). A checkpoint without them
warm-starts one with them (:meth:`S2S.adapt_state_dict`: the new input channels start at zero).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from recvos.errors import RecvosError
from recvos.models.backbones import DEFAULT_BACKBONE, build_backbone
from recvos.models.base import RecurrentVOS, StepOutput
from recvos.models.convlstm import ConvLSTMCell, group_add
from recvos.models.memory import MatchingMemory, MatchingState, insert_zero_columns, matching_options
from recvos.models.state import RecurrentState

__all__ = ["S2S", "S2SState"]


@dataclass
class S2SState(MatchingState, RecurrentState):
    """ConvLSTM state of every object after the last frame: h, c [B, O, hidden, H/32, W/32]; with matching,
    the reference and memory fields of :class:`~recvos.models.memory.MatchingState`."""

    h: torch.Tensor
    c: torch.Tensor


class _DecoderStage(nn.Module):
    """Upsample to ``size``, then relu(conv3x3(cat[x, skip])) computed as conv_x(x) + conv_s(skip) so the
    skip term (shared by all objects of a frame) is computed once per frame; ``extra_dim`` per-object
    channels at ``size`` (the matching maps) join x."""

    def __init__(self, in_dim: int, out_dim: int, skip_dim: int = 0, skip_proj: int = 0, extra_dim: int = 0):
        super().__init__()
        self.conv_x = nn.Conv2d(in_dim + extra_dim, out_dim, 3, padding=1)
        self.proj = (
            nn.Sequential(nn.Conv2d(skip_dim, skip_proj, 1), nn.ReLU(inplace=True)) if skip_dim else None
        )
        self.conv_s = nn.Conv2d(skip_proj, out_dim, 3, padding=1, bias=False) if skip_dim else None

    def forward(
        self,
        x: torch.Tensor,
        size: tuple[int, int],
        skip: torch.Tensor | None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x [N, in_dim, h, w]; skip [B, skip_dim, *size] or None; extra [N, extra_dim, *size] or None ->
        [N, out_dim, *size]."""
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = self.conv_x(y if extra is None else torch.cat([y, extra.to(y.dtype)], 1))
        if self.proj is not None:
            assert skip is not None
            y = group_add(y, self.conv_s(self.proj(skip)))
        return F.relu(y)


class S2S(MatchingMemory, RecurrentVOS):
    """S2S with a configurable backbone (paper: vgg16, hidden 512).

    Args:
        backbone, backbone_weights: see :func:`recvos.models.backbones.build_backbone` (shared by the
            encoder and the initializer; the initializer's copy gets a 4th input channel).
        hidden_size: ConvLSTM width (and encoder conv output).
        decoder_dims: widths of the 5 decoder stages (f16, f8, f4, f2, f1).
        use_initializer, prev_mask_input: the paper's ablation switches (see the module docs).
        extra_channel_init: "mean" or "zero" for the initializer's mask filter.
        frozen_bn, freeze_stages: backbone freezing options (both backbones).
        mode: "one-shot" only (accepted so that every model takes a mode).
        reference, ref_dim, memory, mem_top_k, mem_every: the matching options (see the module docs and RVOS).
    """

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_weights: str | Path | None = None,
        hidden_size: int = 512,
        decoder_dims: tuple[int, ...] = (256, 128, 64, 32, 16),
        use_initializer: bool = True,
        prev_mask_input: bool = False,
        extra_channel_init: str = "mean",
        frozen_bn: bool = False,
        freeze_stages: int = 0,
        mode: str = "one-shot",
        reference: bool = False,
        ref_dim: int = 64,
        memory: int = 0,
        mem_top_k: int = 20,
        mem_every: int = 1,
    ) -> None:
        super().__init__()
        matching_options(reference, memory, mem_top_k, ref_dim, mem_every)
        if mode != "one-shot":
            raise RecvosError(
                f"s2s is semi-supervised only (mode one-shot, got {mode!r}); use rvos-st for zero-shot"
            )
        decoder_dims = tuple(int(d) for d in decoder_dims)
        if len(decoder_dims) != 5 or min(decoder_dims) < 1:
            raise RecvosError(f"S2S decoder_dims must be 5 positive widths (got {decoder_dims})")
        self.name = "s2s"
        self.mode = "one-shot"
        self.config = {
            "backbone": backbone,
            "backbone_weights": str(backbone_weights) if backbone_weights is not None else None,
            "hidden_size": hidden_size,
            "decoder_dims": decoder_dims,
            "use_initializer": use_initializer,
            "prev_mask_input": prev_mask_input,
            "extra_channel_init": extra_channel_init,
            "frozen_bn": frozen_bn,
            "freeze_stages": freeze_stages,
        }
        if reference:  # only when on, so checkpoints without matching keep their exact config
            self.config.update(reference=True, ref_dim=ref_dim)
        if memory:
            self.config.update(memory=memory, mem_top_k=mem_top_k)
            if mem_every != 1:
                self.config.update(mem_every=mem_every)
        self.mem_every = mem_every
        self.reference, self.memory, self.mem_top_k = reference, memory, mem_top_k
        self.use_initializer = use_initializer
        self.prev_mask_input = prev_mask_input
        self.uses_prev_masks = prev_mask_input or memory > 0  # the memory stores the fed-back masks
        self.max_objects = 1
        self.hidden_size = hidden_size
        freeze = {"frozen_bn": frozen_bn, "freeze_stages": freeze_stages}

        self.encoder = build_backbone(backbone, backbone_weights, **freeze)
        c4, c8, c16, c32 = self.encoder.channels
        self.encoder_conv = nn.Conv2d(c32, hidden_size, 1)
        self.mask_conv = nn.Conv2d(1, hidden_size, 1, bias=False) if prev_mask_input else None
        self.ref_embed = nn.Conv2d(c16, ref_dim, 1) if reference or memory else None
        self.mem_log_scale = nn.Parameter(torch.tensor(3.0)) if memory else None
        n = self.matching_maps
        if use_initializer:
            self.initializer = build_backbone(
                backbone, backbone_weights, in_channels=4, extra_channel_init=extra_channel_init, **freeze
            )
            self.init_c = nn.Conv2d(c32, hidden_size, 1)
            self.init_h = nn.Conv2d(c32, hidden_size, 1)
        else:
            self.initializer = None
        self.cell = ConvLSTMCell(
            input_dim=(hidden_size if prev_mask_input else 0) + n,
            hidden_dim=hidden_size,
            kernel_size=3,
            activation="relu",
            shared_dim=0 if prev_mask_input else hidden_size,
        )
        d = decoder_dims
        skip_dims = (c16, c8, c4, 0, 0)
        ins = (hidden_size, *d[:-1])
        self.decoder = nn.ModuleList(
            _DecoderStage(ins[i], d[i], skip_dims[i], d[i] if skip_dims[i] else 0, n if i == 0 else 0)
            for i in range(5)
        )
        self.head = nn.Conv2d(d[-1], 1, 1)

    def init_state(self, frame: torch.Tensor, masks: torch.Tensor | None) -> S2SState:
        """frame [B, 3, H, W]; masks [B, O, H, W] (required: S2S is semi-supervised only)."""
        if masks is None:
            raise RecvosError(
                "s2s is semi-supervised only: give first-frame masks (use rvos-st for zero-shot)"
            )
        B, nobj = masks.shape[:2]
        H, W = frame.shape[-2:]
        masks = masks.to(frame.dtype)
        size32 = self.encoder.feature_sizes(H, W)[-1]
        if self.initializer is not None:
            x = torch.cat([frame.unsqueeze(1).expand(B, nobj, 3, H, W), masks.unsqueeze(2)], 2).flatten(0, 1)
            f32 = self.initializer(x)[-1]
            h0 = F.relu(self.init_h(f32))
            c0 = F.relu(self.init_c(f32))
        else:
            m = F.interpolate(masks, size=size32, mode="area").flatten(0, 1).unsqueeze(1)  # [N, 1, h, w]
            h0 = m.expand(-1, self.hidden_size, -1, -1).contiguous()
            c0 = torch.zeros_like(h0)
        state = S2SState(num_objects=nobj, h=h0.unflatten(0, (B, nobj)), c=c0.unflatten(0, (B, nobj)))
        if self.ref_embed is not None:
            emb = self._embed(self.encoder(frame)[2])
            state = replace(state, **self._init_matching(emb, masks, nobj))
        return state

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict of the same S2S with fewer matching maps (no ``reference`` and/or no ``memory``) -> one
        for this model (warm start): the missing input channels of the ConvLSTM and of the first decoder stage
        are inserted with zero weights after the maps the checkpoint has, so the warm-started model first
        computes exactly what the old one did; new modules keep their initialisation."""
        out = dict(state_dict)
        n = self.matching_maps
        first = self.hidden_size if self.prev_mask_input else 0  # the ConvLSTM's maps follow its mask input
        for key, module, at in (
            ("cell.conv.weight", self.cell.conv, first),
            ("decoder.0.conv_x.weight", self.decoder[0].conv_x, self.hidden_size),
        ):
            w = state_dict.get(key)
            want = module.weight.shape[1]
            if w is None or w.shape[1] >= want:
                continue
            out[key] = insert_zero_columns(
                w, at + n - (want - w.shape[1]), want
            )  # after the checkpoint's maps
        return out

    def step(self, frame: torch.Tensor, state: S2SState, prev_masks: torch.Tensor | None) -> StepOutput:
        """frame [B, 3, H, W]; prev_masks [B, O, H, W] (used with prev_mask_input or a memory) -> StepOutput."""
        B, _, H, W = frame.shape
        nobj = state.num_objects
        f4, f8, f16, f32 = self.encoder(frame)
        if tuple(state.h.shape[-2:]) != tuple(f32.shape[-2:]) or state.h.shape[0] != B:
            raise RecvosError(
                f"frame {tuple(frame.shape)} does not match the state (made for another size/batch)"
            )
        x_shared = self.encoder_conv(f32)  # [B, hidden, h, w]
        hc = (state.h.flatten(0, 1), state.c.flatten(0, 1))
        if self.uses_prev_masks and (prev_masks is None or prev_masks.shape[:2] != (B, nobj)):
            raise RecvosError(
                f"s2s with {'prev_mask_input' if self.prev_mask_input else 'a memory'} needs prev_masks "
                f"[B={B}, O={nobj}, H, W]"
            )
        inputs = []  # per-object inputs of the ConvLSTM: [N, C, h32, w32]
        if self.mask_conv is not None:
            m = F.interpolate(prev_masks.to(frame.dtype), size=f32.shape[-2:], mode="area")
            inputs.append(F.relu(group_add(self.mask_conv(m.flatten(0, 1).unsqueeze(1)), x_shared)))
        maps16 = None
        if self.ref_embed is not None:

            def resized(size: tuple[int, int]) -> torch.Tensor:
                return F.interpolate(prev_masks.to(frame.dtype), size=size, mode="area")

            maps, state = self._matching_maps(f16, state, resized)  # [B, O, n, h16, w16]
            maps16 = maps.flatten(0, 1).to(frame.dtype)
            inputs.append(F.interpolate(maps16, size=f32.shape[-2:], mode="bilinear", align_corners=False))
        if self.mask_conv is not None:
            h, c = self.cell(inputs, hc)
        else:
            h, c = self.cell(inputs or None, hc, shared_gates=self.cell.shared_gates(F.relu(x_shared)))
        sizes = [tuple(t.shape[-2:]) for t in (f16, f8, f4)] + [((H + 1) // 2, (W + 1) // 2), (H, W)]
        y = h
        for i, (stage, size, skip) in enumerate(
            zip(self.decoder, sizes, (f16, f8, f4, None, None), strict=True)
        ):
            y = stage(y, size, skip, maps16 if i == 0 else None)
        logits = self.head(y).view(B, nobj, H, W)
        return StepOutput(
            logits=logits,
            objectness=frame.new_ones(B, nobj),
            state=replace(state, h=h.unflatten(0, (B, nobj)), c=c.unflatten(0, (B, nobj))),
        )
