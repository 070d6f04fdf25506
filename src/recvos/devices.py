"""Device selection, written once for the segmenter, the CLI and training."""

from __future__ import annotations

import platform

import torch

from recvos.errors import RecvosError

__all__ = ["cpu_has_native_bf16", "native_bf16", "resolve_device"]

#: what ``platform.machine()`` says on an x86 CPU
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


def native_bf16(machine: str, onednn_bf16: bool, avx512_bf16: bool, amx: bool) -> bool:
    """Whether a CPU computes bf16 convolutions natively, from what torch reports about it.

    oneDNN says it "supports" bf16 (``onednn_bf16``) on every x86 CPU with AVX-512 (BW, VL, DQ), but without
    the AVX512-BF16 instructions or AMX it converts to fp32 and back around every operation: on an Intel Ice
    Lake Xeon the one-shot default's loop ran 1.7x slower in bf16 than in fp32, 1.5x end to end (BENCHMARKS.md,
    "bf16 only where the CPU has it"). On Arm oneDNN reports bf16 only with the BF16 extension, so its answer is the answer."""
    if not onednn_bf16:
        return False
    if machine.lower() in X86:
        return avx512_bf16 or amx
    return True


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 natively (:func:`native_bf16` with what torch reports here); where
    bf16 would be emulated, the "auto" precisions choose fp32."""
    try:
        onednn = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    cpu = torch.cpu
    flags = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    avx512_bf16, amx = (bool(f()) if callable(f) else False for f in flags)
    return native_bf16(platform.machine(), onednn, avx512_bf16, amx)


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """ "auto" -> cuda:<local_rank> when CUDA is available, else cpu; "cuda" -> cuda:<local_rank>; any other
    torch device string as is. RecvosError for CUDA without CUDA or a string that is not a device."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RecvosError(f"device {name!r} requested but CUDA is not available; use cpu (or auto)")
    if name == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RecvosError(
                f"process with LOCAL_RANK {local_rank} but {torch.cuda.device_count()} GPU(s) here; start at most "
                "one process per GPU (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise RecvosError(f"{name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
