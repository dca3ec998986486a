"""Which GPU(s) each render worker uses on a node with several (``--gpu`` with W workers).

Cycles renders a frame on every device that is switched on; W workers that each switch on every
GPU of the node would all share all GPUs, frame by frame. Instead each worker ``w`` (0 .. W-1)
is pinned to its own device(s) among the D usable ones:

- default (``per_worker`` None): W >= D puts worker ``w`` on device ``w mod D`` (several workers
  per GPU when W > D, which keeps a GPU busy while another worker syncs its scene or hands off
  a frame); W < D gives worker ``w`` the devices ``w, w + W, w + 2W, ...`` (every GPU used, each
  by one worker);
- ``per_worker`` G >= 1 (``--gpus-per-worker G``): G devices from ``w * G`` on, wrapping around;
- ``per_worker`` 0: every usable device in every worker (the behaviour before pinning).

``devices`` restricts the usable devices to these indices of the backend's device list, in
Cycles' order (``--gpu-devices 0,2``).

The numbers are device indices in Cycles' list for the chosen backend (OptiX, else CUDA), which
follows the CUDA device order; with ``CUDA_VISIBLE_DEVICES`` set (as SLURM does for the GPUs of
a job), Cycles lists only those. Pure Python: :func:`ident3d.blender.devices.select_gpu` applies
the choice to Cycles' preferences in each worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ident3d.errors import UsageError


@dataclass(frozen=True)
class GpuLayout:
    """``--gpus-per-worker`` and ``--gpu-devices``."""

    per_worker: int | None = None
    devices: tuple[int, ...] | None = None
    workers: int = 1  # the pool size (set by render_dataset)

    def __post_init__(self) -> None:
        if self.per_worker is not None and self.per_worker < 0:
            raise UsageError("--gpus-per-worker must be 0 (all GPUs in every worker) or more.")
        if self.devices is not None:
            if not self.devices or any(d < 0 for d in self.devices):
                raise UsageError("--gpu-devices must list device indices 0, 1, ...")
            if len(set(self.devices)) != len(self.devices):
                raise UsageError(f"--gpu-devices lists a device twice: {list(self.devices)}.")


def parse_devices(text: str | None) -> tuple[int, ...] | None:
    """``"0,2,3"`` -> ``(0, 2, 3)``; None stays None."""
    if text is None:
        return None
    try:
        out = tuple(int(t) for t in text.replace(" ", "").split(",") if t != "")
    except ValueError:
        raise UsageError(f"--gpu-devices {text!r}: give device indices like 0,1,3.") from None
    if not out:
        raise UsageError("--gpu-devices is empty.")
    GpuLayout(None, out)  # checks
    return out


def with_workers(layout: GpuLayout | None, workers: int) -> GpuLayout:
    """``layout`` (default: the default layout) for a pool of ``workers`` processes."""
    base = layout or GpuLayout()
    return GpuLayout(base.per_worker, base.devices, max(1, int(workers)))


def worker_devices(slot: int, available: int, layout: GpuLayout | None) -> list[int]:
    """Device indices (into Cycles' list of ``available`` devices) that worker ``slot`` uses."""
    if available < 1:
        return []
    layout = layout or GpuLayout()
    usable = list(range(available)) if layout.devices is None else list(layout.devices)
    bad = [d for d in usable if d >= available]
    if bad:
        raise UsageError(
            f"--gpu-devices {','.join(map(str, layout.devices or ()))}: device {bad[0]} does "
            f"not exist; Cycles lists {available} device(s) (0..{available - 1})."
        )
    if layout.per_worker == 0:
        return usable
    if layout.per_worker is None:
        if layout.workers >= len(usable):
            return [usable[slot % len(usable)]]
        return sorted(usable[slot % layout.workers :: layout.workers])
    take = min(layout.per_worker, len(usable))
    first = (slot * layout.per_worker) % len(usable)
    return sorted(usable[(first + i) % len(usable)] for i in range(take))


def device_plan(workers: int, available: int, layout: GpuLayout | None) -> list[list[int]]:
    """Every worker's devices for a pool of ``workers`` on a node with ``available`` GPUs."""
    full = with_workers(layout, workers)
    return [worker_devices(w, available, full) for w in range(full.workers)]


def describe_plan(plan: Sequence[Sequence[int]]) -> str:
    """``worker 0 -> GPU 0, worker 1 -> GPU 1, ...`` (for logs)."""
    return ", ".join(
        f"worker {w} -> GPU {'+'.join(map(str, d)) if d else '-'}" for w, d in enumerate(plan)
    )
