"""The learned interactive head: prompts (box, clicks, a previous mask) -> one object's mask on a frame.

It runs on the frozen backbone of a shipped VOS default (``backbone_from="one-shot"``): the head is small
and the backbone's weights are not stored twice, so a shipped head adds well under a megabyte. Prompts enter
as four maps at the frame's size (RITM's encoding, Sofiiuk et al. 2022): disks of the positive and the
negative clicks, the filled box, and the previous mask. Since the backbone stays frozen and is shared with
the VOS model, the maps are fused late, at every decoder level, through a small strided encoder of their own::

    maps [B, 4, H, W] -> conv s2 -> p4 -> p8 -> p16          (prompt encoder, strides 4, 8, 16)
    frame -> backbone -> f4, f8, f16, f32                    (frozen)
    x16 = blocks(cat(f16 + up(f32), p16))                    (dilated residual blocks: the box's extent)
    x8  = conv(cat(up(x16), f8, p8)); x4 = conv(cat(up(x8), f4, p4)) -> logits at f4 -> bilinear to H x W

Training simulates a user (box, then clicks placed by the standard clicker on the remaining error, each
round fed the previous prediction): :mod:`recvos.training.prompt_task`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recvos.errors import RecvosError
from recvos.models.backbones import DEFAULT_BACKBONE, build_backbone
from recvos.models.state_dicts import tensor_digest

__all__ = ["PromptHead", "PROMPT_CHANNELS"]

#: the prompt maps, in order: positive clicks, negative clicks, box, previous mask
PROMPT_CHANNELS = ("positive", "negative", "box", "previous")


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.GroupNorm(8 if cout % 8 == 0 else 1, cout),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, ch: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(ch, ch, dilation=dilation), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class PromptHead(nn.Module):
    """Frame + prompt maps -> mask logits (see the module docs).

    Args:
        backbone: a registered backbone name; its weights come from ``backbone_from`` or
            ``backbone_weights``, and it is always frozen.
        backbone_from: ``"one-shot"``/``"zero-shot"``: the backbone of that shipped default (the sha256 of its
            tensors is recorded in the config and checked when the head is loaded again); None:
            ``backbone_weights``.
        backbone_weights: None, "imagenet" or a state-dict path (only without ``backbone_from``).
        width: channels of the decoder.
        mode: always "interactive" (the registry's task name).
    """

    name = "prompt-head"

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        backbone_from: str | None = None,
        backbone_weights: str | None = None,
        backbone_sha256: str | None = None,
        width: int = 64,
        mode: str = "interactive",
    ) -> None:
        super().__init__()
        if mode != "interactive":
            raise RecvosError(f"prompt-head is an interactive model (mode={mode!r}); drop the mode option")
        if backbone_from is not None and backbone_weights is not None:
            raise RecvosError("prompt-head: give backbone_from or backbone_weights, not both")
        self.mode = mode
        self.inference_only = False
        self.backbone = build_backbone(backbone, backbone_weights)
        if backbone_from is not None:
            backbone_sha256 = self._load_shipped_backbone(backbone, backbone_from, backbone_sha256)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.config: dict[str, Any] = {
            "backbone": backbone,
            "backbone_from": backbone_from,
            "backbone_weights": backbone_weights,
            "backbone_sha256": backbone_sha256,
            "width": width,
        }
        c4, c8, c16, c32 = self.backbone.channels
        n = len(PROMPT_CHANNELS)
        self.prompt_enc = nn.ModuleList(
            [_conv(n, 16, 2), _conv(16, 32, 2), _conv(32, 32, 2), _conv(32, 64, 2)]
        )
        self.proj32 = nn.Conv2d(c32, width, 1)
        self.proj16 = nn.Conv2d(c16, width, 1)
        self.fuse16 = nn.Sequential(_conv(width + 64, width), _Residual(width, 2), _Residual(width, 4))
        self.proj8 = nn.Conv2d(c8, 32, 1)
        self.fuse8 = nn.Sequential(_conv(width + 32 + 32, width), _conv(width, width))
        self.proj4 = nn.Conv2d(c4, 32, 1)
        self.fuse4 = nn.Sequential(_conv(width + 32 + 32, 48), _conv(48, 32))
        self.out = nn.Conv2d(32, 1, 1)
        # The backbone is rebuilt from its source, so it is left out of this model's state dict.
        if backbone_from is not None:
            self._register_state_dict_hook(_drop_backbone)

    # -- the shared backbone --------------------------------------------------------------------------
    def _load_shipped_backbone(self, backbone: str, kind: str, expected: str | None) -> str:
        from recvos.models.loading import default_checkpoint_path, read_checkpoint

        ckpt = read_checkpoint(default_checkpoint_path(kind))
        if ckpt["model_config"].get("backbone") != backbone:
            raise RecvosError(
                f"the shipped {kind} default has backbone {ckpt['model_config'].get('backbone')!r}, not "
                f"{backbone!r}; set backbone={ckpt['model_config'].get('backbone')!r}"
            )
        prefix = "backbone."
        sd = {k[len(prefix) :]: v.float() for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
        self.backbone.load_state_dict(sd, strict=True)
        digest = tensor_digest(self.backbone.state_dict())
        if expected is not None and digest != expected:
            raise RecvosError(
                f"this prompt head was trained on the backbone of another {kind} default (sha256 "
                f"{expected[:12]}, installed {digest[:12]}); retrain it with configs/prompt_head.yaml or "
                "reinstall the recvos it came with"
            )
        return digest

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], strict: bool = True, assign: bool = False):
        """Strict on the head; the backbone keys may be absent when the backbone comes from ``backbone_from``."""
        if self.config["backbone_from"] is not None:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("backbone.")}
            missing, unexpected = super().load_state_dict(state_dict, strict=False, assign=assign)
            missing = [k for k in missing if not k.startswith("backbone.")]
            if strict and (missing or unexpected):
                raise RuntimeError(f"prompt-head state dict: missing {missing}, unexpected {unexpected}")
            return torch.nn.modules.module._IncompatibleKeys(missing, unexpected)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state_dict)

    def train(self, mode: bool = True) -> PromptHead:
        super().train(mode)
        self.backbone.eval()  # frozen, BatchNorm statistics included
        return self

    # -- forward ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def features(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """frames [B, 3, H, W] in [0, 1] -> the frozen backbone's [f4, f8, f16, f32]."""
        return self.backbone(frames)

    def forward(self, feats: list[torch.Tensor], maps: torch.Tensor) -> torch.Tensor:
        """feats from :meth:`features`, maps [B, 4, H, W] (:data:`PROMPT_CHANNELS`, in [0, 1]) -> logits [B, H, W]."""
        f4, f8, f16, f32 = feats
        p = maps
        pyramid = []
        for enc in self.prompt_enc:
            p = enc(p)
            pyramid.append(p)
        p4, p8, p16 = pyramid[1], pyramid[2], pyramid[3]
        x = self.proj16(f16) + _up(self.proj32(f32), f16)
        x = self.fuse16(torch.cat([x, _up(p16, x)], 1))
        x = _up(x, f8)
        x = self.fuse8(torch.cat([x, self.proj8(f8), _up(p8, f8)], 1))
        x = _up(x, f4)
        x = self.fuse4(torch.cat([x, self.proj4(f4), _up(p4, f4)], 1))
        return F.interpolate(self.out(x), size=maps.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def _drop_backbone(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> dict:
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.")]:
        del state_dict[key]
    return state_dict
