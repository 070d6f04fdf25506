"""Device selection, written once for the segmenter, the CLI and training."""

from __future__ import annotations

import torch

from recvos.errors import RecvosError

__all__ = ["resolve_device"]


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
