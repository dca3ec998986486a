"""The worker processes: what each builds and renders (a per-process renderer, built once),
how many there are by default, and the pool that feeds them.

The worker entry point :func:`render_task` is pickled by its module path (spawn context), so
it and everything it reaches stay at module level here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.render.mock import MockRenderer

#: Samples per work item sent to a worker (small: smooth progress, little lost on a kill).
DEFAULT_CHUNK = 4
#: Cap on the default worker count (each worker holds its own Blender, ~0.3-0.5 GB).
MAX_DEFAULT_WORKERS = 8


# ------------------------------------------------------------------------------ in a worker

_RENDERER: Any = None
_RENDERER_KEY: Any = None


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its scene (picklable)."""

    renderer: str
    preset: dict[str, Any]
    quality: dict[str, Any]
    resolution: int
    objects: tuple[str, ...]
    threads: int
    gpu: bool


def _clean_blender_paths() -> None:
    """Drop Blender's internal script folders from ``sys.path`` before bpy is imported.

    Importing bpy adds ``.../bpy/<version>/scripts/modules`` (which holds Blender's own inner
    ``bpy`` package) to ``sys.path``; a spawned worker inherits its parent's ``sys.path``, and
    if the parent had imported bpy, ``import bpy`` in the child would find that inner package
    instead of the real module and fail.
    """
    if "bpy" in sys.modules:
        return
    marker = f"{os.sep}bpy{os.sep}"
    sys.path[:] = [p for p in sys.path if not (marker in p and f"{os.sep}scripts" in p)]


def make_renderer(spec: WorkerSpec) -> Any:
    """Build the scene of ``spec`` in this process (Blender or the mock)."""
    if spec.renderer == "mock":
        return MockRenderer(
            spec.preset, spec.quality, spec.resolution, spec.objects, spec.threads, spec.gpu
        )
    _clean_blender_paths()
    from ident3d.blender.devices import NoGPUError
    from ident3d.blender.scene import SceneError, SceneRenderer

    try:
        return SceneRenderer(
            spec.preset,
            spec.quality,
            spec.resolution,
            objects=spec.objects,
            threads=spec.threads,
            gpu=spec.gpu,
        )
    except (SceneError, NoGPUError) as exc:
        raise UsageError(str(exc)) from None


def _get_renderer(spec: WorkerSpec) -> Any:
    global _RENDERER, _RENDERER_KEY
    if _RENDERER is None or _RENDERER_KEY != spec:
        if _RENDERER is not None:
            _RENDERER.close()
        _RENDERER = make_renderer(spec)
        _RENDERER_KEY = spec
    return _RENDERER


@dataclass
class Task:
    """A chunk of consecutive samples of one shard."""

    shard: int
    local_start: int
    frames: list[list[dict[str, np.ndarray]]]  # [sample][view] -> frame parameters
    seeds: np.ndarray  # (k, views)
    classes: np.ndarray  # (k,)


def render_task(spec: WorkerSpec, task: Task) -> tuple[int, int, np.ndarray, dict[str, float]]:
    """Worker entry point: render a chunk; returns ``(shard, local_start, images, stats)``."""
    r = _get_renderer(spec)
    k, views = task.seeds.shape
    out = np.empty((k, views, spec.resolution, spec.resolution, 3), np.uint8)
    for j in range(k):
        for v in range(views):
            out[j, v] = r.render(task.frames[j][v], int(task.seeds[j, v]), int(task.classes[j]))
    stats = {**r.timings, "frames": r.frames, "rss_kib": _rss_kib(), "pid": os.getpid()}
    return task.shard, task.local_start, out, stats


def _rss_kib() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


# ------------------------------------------------------------------------------ the pool


def default_threads(workers: int) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, workers))


def default_workers() -> int:
    """Worker processes when ``--workers`` is not given: one per 4 cores (at least 1, at most
    ``MAX_DEFAULT_WORKERS``), each with cores / W Cycles threads.

    On 2 cores, 1 worker x 2 threads and 2 workers x 1 thread rendered the same images/s at
    224 px (benchmarks/bench_render.py), and one worker starts faster and holds one Blender
    (~0.5 GB) instead of two; on many cores a few processes keep Cycles' per-frame serial
    work (scene sync, denoiser set-up, hand-off) from limiting the thread scaling.
    """
    return max(1, min(default_threads(1) // 4, MAX_DEFAULT_WORKERS))


def _run(
    spec: WorkerSpec, tasks: Iterator[Task], workers: int
) -> Iterator[tuple[int, int, np.ndarray, dict[str, float]]]:
    """Render tasks in ``workers`` spawned processes (0: here), yielding results as they come."""
    if workers == 0:
        for t in tasks:
            yield render_task(spec, t)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    pending: set[Future[Any]] = set()
    try:
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * workers:
                try:
                    t = next(tasks)
                except StopIteration:
                    exhausted = True
                    break
                pending.add(pool.submit(render_task, spec, t))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
