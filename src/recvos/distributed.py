"""Process-group set-up decided at run time: one process (CPU or one GPU) or ``torchrun`` (DDP training,
prediction split across ranks).

``torchrun --nproc_per_node=K`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; with ``WORLD_SIZE > 1`` the
process group is initialised with NCCL on CUDA and gloo on CPU. The environment is read when
:func:`init_distributed` is called, never at import.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from recvos.devices import resolve_device

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Read the torchrun environment and initialise the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank if world > 1 else 0)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    info = DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)
    if world > 1:
        if dist.is_initialized():
            return info
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world)
        info.initialized_here = True
        if info.is_main:
            log.info("process group: %s, %d ranks; rank 0 on %s", backend, world, dev)
    return info


#: How long rank 0 waits, at teardown, for the other ranks to have torn down their process group.
TEARDOWN_WAIT_S = 30.0


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group, rank 0 last. Rank 0 hosts the rendezvous store; when it exited while another
    rank was still tearing down its gloo group, that rank aborted ("terminate called without an active
    exception", about one run in six). Each other rank says through the store that it is done; rank 0 waits for
    them (bounded, so a rank that died does not hold it) before its own process ends."""
    if not (info.initialized_here and dist.is_initialized()):
        return
    store = dist.distributed_c10d._get_default_store() if info.distributed else None
    dist.destroy_process_group()
    if store is None:
        return
    from datetime import timedelta

    try:
        if info.is_main:
            store.wait(
                [f"recvos/gone/{r}" for r in range(1, info.world_size)], timedelta(seconds=TEARDOWN_WAIT_S)
            )
        else:
            store.set(f"recvos/gone/{info.rank}", "1")
    except Exception as e:  # a rank that died or a store already gone: nothing is left to protect
        log.debug("teardown rendezvous skipped: %s", e)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is True on any rank."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (a list of length world_size), or ``[obj]`` in one process."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
