"""Where oneDNN packing gains: the shipped one-shot default's convolutions, eager against packed, in one run.

The model is optimised twice (``optimize_for_inference(pack=False)``: BatchNorm folded, channels-last, eager
convolutions; and with the default ``pack=True``: ``recvos.models.packed_conv``) and cast to each precision.
Timed, alternating the two in each round, best of ``--rounds``: the backbone alone on a 240x427 frame, and
each ConvLSTM gate convolution (with its shared-input convolution) at the input shape it sees with 1 object.
The model's whole loop is timed by ``benchmarks/onnx_runtime.py``.

Usage::

    .venv/bin/python benchmarks/packed_conv.py --write
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch starts OpenMP

import torch  # noqa: E402
from _common import report  # noqa: E402  (benchmarks/ is on sys.path)

from recvos.models.feed import FirstFrameFeed  # noqa: E402
from recvos.models.loading import resolve_model  # noqa: E402

SIZE = (240, 427)


def best_ms(fns: dict[str, object], rounds: int, calls: int) -> dict[str, float]:
    """Best-of-rounds ms per call of each function, the functions alternating within each round."""
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():
        fn()  # warm-up (packs the weights)
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best[name], 1000 * (time.perf_counter() - t0) / calls)
    return best


def gate_inputs(model, frame: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, shared input) of each ConvLSTM level's gate convolutions on the second frame, 1 object."""
    seen: dict[tuple[int, str], torch.Tensor] = {}  # the last call's input of each (level, convolution)
    hooks = []
    for level, cell in enumerate(model.cells):
        for kind, conv in (("gates", cell.conv), ("shared", cell.shared_conv)):
            hooks.append(
                conv.register_forward_pre_hook(
                    lambda mod, inp, key=(level, kind): seen.__setitem__(key, inp[0].clone())
                )
            )
    try:
        for _ in model.unroll([frame, frame], FirstFrameFeed(mask)):
            pass
    finally:
        for h in hooks:
            h.remove()
    return [(seen[level, "gates"], seen[level, "shared"]) for level in range(len(model.cells))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = resolve_model(None)
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(1, 3, *SIZE, generator=g)
    mask = torch.zeros(1, 1, *SIZE)
    mask[..., 60:180, 100:300] = 1
    rows = []
    with torch.inference_mode():
        for dtype in (torch.bfloat16, torch.float32):
            eager = copy.deepcopy(model).optimize_for_inference(pack=False).to(dtype)
            packed = copy.deepcopy(model).optimize_for_inference().to(dtype)
            x, m = frame.to(dtype), mask.to(dtype)
            name = str(dtype).removeprefix("torch.")
            t = best_ms(
                {
                    "eager": lambda e=eager, x=x: e.backbone(x),
                    "packed": lambda pk=packed, x=x: pk.backbone(x),
                },
                args.rounds,
                5,
            )
            rows.append(
                (name, f"backbone (EfficientNet-Lite0, {SIZE[1]}x{SIZE[0]})", t["eager"], t["packed"])
            )
            for level, ((gx, sx), ce, cp) in enumerate(
                zip(gate_inputs(eager, x, m), eager.cells, packed.cells, strict=True)
            ):
                t = best_ms(
                    {
                        "eager": lambda ce=ce, gx=gx, sx=sx: (ce.conv(gx), ce.shared_conv(sx)),
                        "packed": lambda cp=cp, gx=gx, sx=sx: (cp.conv(gx), cp.shared_conv(sx)),
                    },
                    args.rounds,
                    20,
                )
                label = (
                    f"ConvLSTM f{2 ** (5 - level)} gates: {gx.shape[1]}->{ce.conv.out_channels} and "
                    f"{sx.shape[1]}->{ce.conv.out_channels} at {gx.shape[2]}x{gx.shape[3]}"
                )
                rows.append((name, label, t["eager"], t["packed"]))
    table = (
        "| precision | part | eager ms | packed ms | packed / eager |\n|---|---|---|---|---|\n"
        + "\n".join(f"| {d} | {label} | {e:.2f} | {pk:.2f} | {pk / e:.2f} |" for d, label, e, pk in rows)
    )
    about = (
        f". The shipped one-shot default optimised without and with packing; best of {args.rounds} rounds, the two "
        "alternating; gate rows time the gate convolution and the shared-input one at the shapes of a 1-object frame."
    )
    title = "## oneDNN packed convolutions, part by part"
    report("packed_conv", title, "packed_conv.py", argv, args.threads, about, table, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
