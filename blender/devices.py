"""Choosing the Cycles render device (CPU, or a GPU through OptiX with a CUDA fallback).

Blender needs four things before Cycles renders on a GPU, and silently renders on the CPU if
any is missing: the Cycles add-on preference ``compute_device_type`` ('OPTIX' or 'CUDA'), a
call to ``get_devices()`` so the device list is filled, ``use = True`` on the wanted devices,
and ``scene.cycles.device = 'GPU'``. :func:`select_gpu` does the first three on a Cycles
preferences object (real or a stand-in, which is how it is unit-tested on machines without a
GPU) and raises :class:`NoGPUError` when no device of the wanted kinds exists: never a
silent CPU render.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

GPU_BACKENDS: tuple[str, ...] = ("OPTIX", "CUDA")


class NoGPUError(RuntimeError):
    """No usable GPU device for Cycles."""


def cycles_preferences() -> Any:
    """The Cycles add-on preferences of the running Blender (imports bpy)."""
    import bpy

    return bpy.context.preferences.addons["cycles"].preferences


def select_gpu(
    prefs: Any,
    backends: Sequence[str] = GPU_BACKENDS,
    choose: Callable[[int], Sequence[int]] | None = None,
) -> tuple[str, list[str]]:
    """Enable the devices of the first backend in ``backends`` that has one: all of them, or
    those at the indices ``choose(number of devices)`` returns (a worker pinned to its GPUs,
    :func:`ident3d.render.gpus.worker_devices`).

    Returns ``(backend, [names of the enabled devices])``. Every other device (the CPU above
    all, and the backend's devices not chosen) is switched off, so Cycles renders on the chosen
    GPU(s) only. Raises :class:`NoGPUError` if no backend has a device.
    """
    tried: list[str] = []
    for backend in backends:
        try:
            prefs.compute_device_type = backend
        except (TypeError, ValueError):  # backend not compiled into this Blender
            tried.append(f"{backend}: not supported by this Blender build")
            continue
        prefs.get_devices()
        devices = [d for d in prefs.devices if d.type == backend]
        if not devices:
            tried.append(f"{backend}: no device")
            continue
        picked = range(len(devices)) if choose is None else list(choose(len(devices)))
        if not picked:
            raise NoGPUError(f"no {backend} device was chosen out of {len(devices)}.")
        chosen = {id(devices[i]) for i in picked}
        for d in prefs.devices:
            d.use = id(d) in chosen
        return backend, [devices[i].name for i in sorted(picked)]
    raise NoGPUError(
        "--gpu was given but Cycles found no GPU device (" + "; ".join(tried) + "); "
        "check the NVIDIA driver, or render on the CPU without --gpu."
    )
