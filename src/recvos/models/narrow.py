"""Narrow a trained RVOS decoder to a smaller ``hidden_size``: a warm start for a thinner, faster model.

The decoder's cost is its ConvLSTM gate convolutions, whose work grows with the square of the width
(``hidden_size`` h sets every level: hidden ``(h, h/2, h/4, h/8)``, skip projections ``(h, h, h/2, h/4)``).
Training a thinner decoder from scratch would repeat every stage of the default's recipe; narrowing keeps,
at every level, the hidden units and skip channels whose outgoing weights are largest and slices every
tensor that reads or writes them, so the thin model starts from what the wide one learnt. Measured once
(BENCHMARKS.md, "A thinner decoder"): the 128-wide stage-3 model narrowed to 80 and trained by the stage-4
recipe held the large objects but lost the small ones, while the same width trained through every stage
scored what the 128-wide recipe did and became the one-shot default; narrowing is a quick probe, not a recipe.

What is kept, per level ``l``:

- hidden unit ``j`` of ``cells[l]``: ranked by the squared norm of the weights that read it (its own gate
  convolution's recurrent and spatial-recurrent columns, the next level's columns of the upsampled hidden
  state, the mask head at the finest level, the objectness head); its four gate rows (i, f, o, g) go with it;
- skip channel ``j`` of ``skips[l]``: ranked by the squared norm of ``cells[l].shared_conv``'s column ``j``
  times its BatchNorm's output scale (``weight**2 + bias**2``).

A unit whose outgoing weights are all zero contributes nothing, so dropping only such units leaves every
output unchanged (``tests/test_narrow.py`` checks this). The backbone, the matching embedding and the memory
temperature are copied as they are.

Command line (writes a model checkpoint usable as ``model.init_from``)::

    python -m recvos.models.narrow runs/default_oneshot_mem/checkpoints/best.pt runs/narrow80.pt --hidden-size 80
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from recvos.errors import RecvosError, run_command
from recvos.models.factory import build_model
from recvos.models.rvos import RVOS

__all__ = ["narrow", "main"]


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in increasing index order (keeps the channels' order)."""
    return scores.topk(k).indices.sort().values


def _gate_rows(keep: torch.Tensor, hidden: int) -> torch.Tensor:
    """Rows of a [4 * hidden, ...] gate tensor (blocks i, f, o, g) that belong to the kept units."""
    return torch.cat([keep + g * hidden for g in range(4)])


def _kept_units(model: RVOS, widths: tuple[int, ...]) -> list[torch.Tensor]:
    dims = model.hidden_dims
    scores = [torch.zeros(d) for d in dims]
    for level, cell in enumerate(model.cells):
        w = cell.conv.weight.detach().float()  # [4h, in_prev + mask + h * (1 + extra), k, k]
        own = w.shape[1] - dims[level] * (1 + cell.extra_hidden)
        for e in range(1 + cell.extra_hidden):  # recurrent and spatial-recurrent columns
            cols = w[:, own + e * dims[level] : own + (e + 1) * dims[level]]
            scores[level] += cols.pow(2).sum((0, 2, 3))
        if level:  # this level's first columns read the previous level's upsampled hidden state
            scores[level - 1] += w[:, : dims[level - 1]].pow(2).sum((0, 2, 3))
    scores[-1] += model.mask_head.weight.detach().float().pow(2).sum((0, 2, 3))
    if model.objectness_head is not None:
        fc = model.objectness_head.weight.detach().float().pow(2).sum(0)
        for level, part in enumerate(fc.split(list(dims))):
            scores[level] += part
    return [_top(s, k) for s, k in zip(scores, widths, strict=True)]


def _kept_skips(model: RVOS, widths: tuple[int, ...]) -> list[torch.Tensor]:
    keep = []
    for skip, cell, k in zip(model.skips, model.cells, widths, strict=True):
        bn = skip[1]
        scale = bn.weight.detach().float().pow(2) + bn.bias.detach().float().pow(2)
        col = cell.shared_conv.weight.detach().float().pow(2).sum((0, 2, 3))
        keep.append(_top(col * scale, k))
    return keep


@torch.no_grad()
def narrow(model: RVOS, hidden_size: int) -> RVOS:
    """A copy of ``model`` (an RVOS) with decoder width ``hidden_size`` (at most the model's, a multiple of 8),
    keeping the channels described in the module docs. Returned in the model's train/eval mode."""
    if not isinstance(model, RVOS):
        raise RecvosError(f"narrow() takes an RVOS model (rvos-s/t/st), not {type(model).__name__}")
    old = model.hidden_dims[0]
    if hidden_size < 8 or hidden_size % 8 or hidden_size > old:
        raise RecvosError(
            f"hidden_size must be a multiple of 8 between 8 and the model's {old} (got {hidden_size})"
        )
    thin = build_model(model.name, **{**model.config, "backbone_weights": None, "hidden_size": hidden_size})
    units = _kept_units(model, thin.hidden_dims)
    skips = _kept_skips(model, thin.skip_dims)
    src = model.state_dict()
    out = {k: v.clone() for k, v in src.items() if not k.startswith(("skips.", "cells.", "mask_head."))}
    if model.objectness_head is not None:
        offsets = torch.tensor([0, *model.hidden_dims[:-1]]).cumsum(0)
        cols = torch.cat([u + int(o) for u, o in zip(units, offsets, strict=True)])
        out["objectness_head.weight"] = src["objectness_head.weight"][:, cols].clone()
    for level, (cell, keep_s) in enumerate(zip(model.cells, skips, strict=True)):
        p = f"skips.{level}."
        out[p + "0.weight"] = src[p + "0.weight"][keep_s].clone()
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[p + f"1.{name}"] = src[p + f"1.{name}"][keep_s].clone()
        out[p + "1.num_batches_tracked"] = src[p + "1.num_batches_tracked"].clone()

        h_old, keep = model.hidden_dims[level], units[level]
        rows = _gate_rows(keep, h_old)
        w = src[f"cells.{level}.conv.weight"]
        own = w.shape[1] - h_old * (1 + cell.extra_hidden)
        cols = []
        if level:
            cols.append(units[level - 1])  # the previous level's upsampled hidden state
            first = model.hidden_dims[level - 1]
        else:
            first = 0
        cols.append(torch.arange(first, own))  # the mask and matching maps: all kept
        cols += [keep + own + e * h_old for e in range(1 + cell.extra_hidden)]
        out[f"cells.{level}.conv.weight"] = w[rows][:, torch.cat(cols)].clone()
        out[f"cells.{level}.conv.bias"] = src[f"cells.{level}.conv.bias"][rows].clone()
        out[f"cells.{level}.shared_conv.weight"] = src[f"cells.{level}.shared_conv.weight"][rows][
            :, keep_s
        ].clone()
    out["mask_head.weight"] = src["mask_head.weight"][:, units[-1]].clone()
    out["mask_head.bias"] = src["mask_head.bias"].clone()
    thin.load_state_dict(out, strict=True)
    return thin.train(model.training)


def main(argv: list[str] | None = None) -> int:
    from recvos.models.loading import load_checkpoint, save_model

    ap = argparse.ArgumentParser(
        prog="python -m recvos.models.narrow",
        description="Narrow a trained RVOS checkpoint's decoder to a smaller hidden_size (a warm start).",
    )
    ap.add_argument("checkpoint", type=Path, help="an RVOS model or training checkpoint")
    ap.add_argument("out", type=Path, help="where to write the narrowed model checkpoint")
    ap.add_argument("--hidden-size", type=int, required=True, help="the new decoder width (multiple of 8)")
    args = ap.parse_args(argv)
    model = load_checkpoint(args.checkpoint)
    thin = narrow(model, args.hidden_size)
    save_model(thin, args.out)
    print(f"wrote {args.out}: {model.name}, hidden_size {model.hidden_dims[0]} -> {args.hidden_size}")
    return 0


if __name__ == "__main__":
    run_command(main, "narrow")
