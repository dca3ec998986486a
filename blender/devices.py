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

from collections.abc import Sequence
from typing import Any

GPU_BACKENDS: tuple[str, ...] = ("OPTIX", "CUDA")


class NoGPUError(RuntimeError):
    """No usable GPU device for Cycles."""


def cycles_preferences() -> Any:
    """The Cycles add-on preferences of the running Blender (imports bpy)."""
    import bpy

    return bpy.context.preferences.addons["cycles"].preferences


def select_gpu(prefs: Any, backends: Sequence[str] = GPU_BACKENDS) -> tuple[str, list[str]]:
    """Enable every device of the first backend in ``backends`` that has one.

    Returns ``(backend, [device names])``. Devices of other types (the CPU above all) are
    switched off, so Cycles renders on the GPU(s) only. Raises :class:`NoGPUError` if no
    backend has a device.
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
        for d in prefs.devices:
            d.use = d.type == backend
        return backend, [d.name for d in devices]
    raise NoGPUError(
        "--gpu was given but Cycles found no GPU device (" + "; ".join(tried) + "); "
        "check the NVIDIA driver, or render on the CPU without --gpu."
    )
