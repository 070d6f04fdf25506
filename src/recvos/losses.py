"""Training losses: soft IoU (RSIS/RVOS), BCE, dice, Lovasz hinge, Hungarian slot matching, objectness BCE.

Mask terms are computed per object per frame and averaged over the (frame, object) pairs a boolean
``weight`` mask [B, T, O] selects: the frame is annotated and the object is present (one-shot), or the slot
is matched to a ground-truth object that is annotated there (zero-shot).

Shape grammar (used in every docstring and annotation of recvos): B batch, T time (frames), O objects
(slots; P predicted slots and G ground-truth objects where they differ), C channels, H and W height and
width; a stride suffix names a feature map's resolution relative to the input, ``f4`` is H/4 x W/4, and
``f8``, ``f16``, ``f32`` likewise. Masks and logits given to models are float [B, O, H, W] ({0, 1} or soft),
objectness is a probability [B, O]; frames given to models are float RGB [B, 3, H, W] in [0, 1], frames
from frame sources uint8 RGB numpy [H, W, 3]; object-id maps are integer numpy [H, W] (0 background).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

_EPS = 1e-6


def soft_iou_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``1 - <p, y> / (|p| + |y| - <p, y>)`` over the last two axes.

    probs, target [..., H, W] in [0, 1] -> loss [...]. Both empty gives 0 (a correct empty prediction).
    """
    inter = (probs * target).sum((-2, -1))
    union = probs.sum((-2, -1)) + target.sum((-2, -1)) - inter
    return 1.0 - (inter + eps) / (union + eps)


def dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice ``1 - (2<p,y> + eps) / (|p| + |y| + eps)``: [..., H, W] -> [...]."""
    inter = (probs * target).sum((-2, -1))
    return 1.0 - (2 * inter + eps) / (probs.sum((-2, -1)) + target.sum((-2, -1)) + eps)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-pixel binary cross-entropy averaged over H, W: [..., H, W] -> [...]."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean((-2, -1))


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    gts = gt_sorted.sum()
    inter = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jac = 1.0 - inter / union
    if gt_sorted.numel() > 1:
        jac[1:] = jac[1:] - jac[:-1]
    return jac


def lovasz_hinge_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz hinge (Berman et al. 2018), a convex surrogate of 1 - IoU, per mask: [..., H, W] -> [...]."""
    lead = logits.shape[:-2]
    flat_l = logits.reshape(-1, logits.shape[-2] * logits.shape[-1])
    flat_t = target.reshape(flat_l.shape).to(flat_l.dtype)
    out = []
    for lg, gt in zip(flat_l, flat_t, strict=True):
        signs = 2.0 * gt - 1.0
        errors = 1.0 - lg * signs
        errors_sorted, perm = torch.sort(errors, descending=True)
        grad = _lovasz_grad(gt[perm])
        out.append(torch.dot(F.relu(errors_sorted), grad))
    if not out:
        return logits.new_zeros(lead)
    return torch.stack(out).reshape(lead)


def hungarian_match(cost: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one assignment of rows (predicted slots) to columns (ground-truth objects).

    cost [P, G] (P and G may differ) -> (rows, cols) index arrays of length min(P, G), rows sorted.
    """
    c = cost.detach().float().cpu().numpy() if isinstance(cost, torch.Tensor) else np.asarray(cost, float)
    if c.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, cols = linear_sum_assignment(c)
    return rows.astype(np.int64), cols.astype(np.int64)


def match_slots(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Match predicted slots to ground-truth objects on the soft-IoU cost, once per clip (RVOS zero-shot).

    Each ground-truth object is compared at its first valid frame of the clip (frame 0 for objects visible
    from the start), so the matching is decided where the object first appears and kept for the clip.

    probs [B, T, P, H, W]; target [B, T, G, H, W]; valid [B, T, G] bool (annotated and appeared).
    Returns ``assign`` [B, P] long: the ground-truth index matched to slot p, or -1 (unmatched).
    Objects never valid in the clip take no part in the matching.
    """
    B, T, P = probs.shape[:3]
    G = target.shape[2]
    assign = torch.full((B, P), -1, dtype=torch.long)
    if G == 0:
        return assign.to(probs.device)
    with torch.no_grad():
        any_valid = valid.any(1)  # [B, G]
        first_t = valid.float().argmax(1)  # [B, G]: index of the first True (0 if none)
        bidx = torch.arange(B, device=probs.device)[:, None].expand(B, G)
        tgt = target[
            bidx, first_t, torch.arange(G, device=probs.device)[None, :].expand(B, G)
        ]  # [B, G, H, W]
        prd = probs[bidx, first_t]  # [B, G, P, H, W]: all slots at each object's first frame
        cost = soft_iou_loss(prd.float(), tgt[:, :, None].float())  # [B, G, P]
        cost = cost.transpose(1, 2).cpu().numpy()  # [B, P, G]
        any_valid = any_valid.cpu().numpy()
    for b in range(B):
        gts = np.flatnonzero(any_valid[b])
        if gts.size == 0:
            continue
        rows, cols = hungarian_match(cost[b][:, gts])
        assign[b, torch.as_tensor(rows)] = torch.as_tensor(gts[cols])
    return assign.to(probs.device)


@dataclass
class LossOutput:
    """``total`` is the scalar to back-propagate; ``terms`` holds detached scalars for logging."""

    total: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)
    assign: torch.Tensor | None = None  # [B, P] zero-shot matching (ground-truth index or -1)


class VOSLoss(torch.nn.Module):
    """Weighted mask loss (soft IoU + optional BCE, dice, Lovasz) plus the zero-shot objectness BCE.

    One-shot (``zero_shot=False``): slot o is ground-truth object o; mask terms on the frames and objects
    ``weight`` selects. Zero-shot: slots are matched to objects by :func:`match_slots`; matched slots get the
    mask terms where their object is valid, unmatched slots get none; the objectness of every slot on every
    annotated frame gets BCE toward [slot is matched].
    """

    def __init__(
        self,
        iou: float = 1.0,
        bce: float = 0.0,
        dice: float = 0.0,
        lovasz: float = 0.0,
        objectness: float = 1.0,
    ) -> None:
        super().__init__()
        self.weights = {"iou": iou, "bce": bce, "dice": dice, "lovasz": lovasz}
        self.objectness_weight = objectness

    def mask_terms(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits, target [..., H, W] -> {term: loss [...]} for the terms with non-zero weight."""
        logits = logits.float()
        target = target.float()
        out: dict[str, torch.Tensor] = {}
        probs = torch.sigmoid(logits)
        if self.weights["iou"]:
            out["iou"] = soft_iou_loss(probs, target)
        if self.weights["bce"]:
            out["bce"] = bce_loss(logits, target)
        if self.weights["dice"]:
            out["dice"] = dice_loss(probs, target)
        if self.weights["lovasz"]:
            out["lovasz"] = lovasz_hinge_loss(logits, target)
        return out

    def forward(
        self,
        logits: torch.Tensor,
        objectness: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor,
        zero_shot: bool = False,
        annotated: torch.Tensor | None = None,
    ) -> LossOutput:
        """logits [B, T, P, H, W]; objectness [B, T, P]; target [B, T, G, H, W]; weight [B, T, G] bool.

        annotated [B, T] bool (zero-shot objectness only; default: every frame).
        One-shot requires P == G.
        """
        B, T, P = logits.shape[:3]
        assign = None
        if zero_shot:
            assign = match_slots(torch.sigmoid(logits.detach().float()), target, weight)
            safe = assign.clamp(min=0)  # [B, P]
            matched = assign >= 0
            idx = safe[:, None, :, None, None].expand(B, T, P, *target.shape[-2:])
            tgt = torch.gather(target, 2, idx)  # [B, T, P, H, W]
            w = torch.gather(weight, 2, safe[:, None, :].expand(B, T, P)) & matched[:, None, :]
        else:
            if target.shape[2] != P:
                raise ValueError(
                    f"one-shot loss needs as many slots as objects, got {P} and {target.shape[2]}"
                )
            tgt, w = target, weight
        wf = w.float()
        denom = wf.sum().clamp(min=1.0)
        total = logits.new_zeros((), dtype=torch.float32)
        terms: dict[str, float] = {}
        for name, per in self.mask_terms(logits, tgt).items():
            val = (per * wf).sum() / denom
            total = total + self.weights[name] * val
            terms[name] = float(val.detach())
        if zero_shot:
            obj_t = matched[:, None, :].expand(B, T, P).float()
            frame_w = (
                annotated
                if annotated is not None
                else torch.ones(B, T, dtype=torch.bool, device=logits.device)
            )
            fw = frame_w[:, :, None].expand(B, T, P).float()
            obj = F.binary_cross_entropy(objectness.float().clamp(1e-6, 1 - 1e-6), obj_t, reduction="none")
            obj = (obj * fw).sum() / fw.sum().clamp(min=1.0)
            total = total + self.objectness_weight * obj
            terms["objectness"] = float(obj.detach())
        elif objectness.requires_grad:
            # keep every head in the graph (DDP expects each parameter to receive a gradient)
            total = total + 0.0 * objectness.float().sum()
        terms["total"] = float(total.detach())
        terms["num_masks"] = float(wf.sum())
        return LossOutput(total=total, terms=terms, assign=assign)
