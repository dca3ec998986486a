"""Devices: :func:`pick_device`, the distributed set-up from ``WORLD_SIZE``/``RANK`` and the
mixed-precision choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ident3d.errors import UsageError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    return dev


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), pick_device(device_name)
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return _Dist(world, rank, local), device


def _close_distributed() -> None:
    """Leave the process group cleanly after a finished run: a barrier, then destroy. A rank
    that exits while the other ranks' gloo threads still talk to it can abort ("terminate
    called without an active exception", exit -6), which torchrun reports as a failure. Only
    on success: after an error a barrier could wait for a rank that is gone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def _use_amp(cfg: dict[str, Any], device: torch.device) -> bool:
    amp = cfg["loop"].get("amp", "auto")
    if amp == "auto":
        return device.type == "cuda"
    return bool(amp) and amp != "off"
