"""The worker processes: what each builds and renders (a per-process renderer, built once),
how many there are by default, and the pool that feeds them.

The worker entry point :func:`render_task` is pickled by its module path (spawn context), so
it and everything it reaches stay at module level here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.render.mock import MockRenderer
from ident3d.store.format import pid_alive

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
    gpu_layout: Any = None  # ident3d.render.gpus.GpuLayout: which GPU(s) each worker uses


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
            **({"gpu_choose": gpu_chooser(spec)} if spec.gpu else {}),
        )
    except (SceneError, NoGPUError) as exc:
        raise UsageError(str(exc)) from None


#: This worker's index in its pool (0 .. W-1): which GPU(s) it is pinned to.
_SLOT = 0


def gpu_chooser(spec: WorkerSpec, slot: int | None = None) -> Any:
    """``choose(n_devices) -> indices`` for :func:`ident3d.blender.devices.select_gpu`: the
    devices of worker ``slot`` (default: this worker's) under ``spec.gpu_layout``."""
    from ident3d.render.gpus import worker_devices

    mine = _SLOT if slot is None else int(slot)

    def choose(available: int) -> list[int]:
        return worker_devices(mine, available, spec.gpu_layout)

    return choose


def _close_renderer() -> None:
    """Close this process's renderer (removes Blender's hand-off folder); idempotent."""
    global _RENDERER, _RENDERER_KEY
    r, _RENDERER, _RENDERER_KEY = _RENDERER, None, None
    if r is not None:
        with contextlib.suppress(Exception):
            r.close()


#: Blender hand-off folders are ``ident3d-frame-<pid>-<random>`` (blender/scene.py).
FRAME_DIR_RE = re.compile(r"^ident3d-frame-(?P<pid>\d+)-")
SHM = "/dev/shm"


def clean_stale_frame_dirs(base: str = SHM, pids: Iterable[int] | None = None) -> list[str]:
    """Remove hand-off folders ``ident3d-frame-<pid>-*`` in ``base`` whose process is gone
    (a killed worker). With ``pids``, only those of these processes. Folders of live processes
    and folders without a PID in their name are left alone. Returns the removed paths."""
    wanted = None if pids is None else {int(p) for p in pids}
    removed: list[str] = []
    try:
        names = os.listdir(base)
    except OSError:
        return removed
    for name in names:
        m = FRAME_DIR_RE.match(name)
        if m is None:
            continue
        pid = int(m["pid"])
        if (wanted is not None and pid not in wanted) or pid_alive(pid):
            continue
        path = os.path.join(base, name)
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            removed.append(path)
    return removed


def _watch_parent(parent: int, interval: float = 0.2) -> None:
    """Exit this worker (after removing its hand-off folder) once its parent is gone: a
    SIGKILLed main process cannot stop its pool, and an orphan would keep a Blender alive."""

    def loop() -> None:
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                r = _RENDERER
                tmp = getattr(r, "_tmpdir", None)
                if tmp:
                    shutil.rmtree(tmp, ignore_errors=True)
                os._exit(1)

    threading.Thread(target=loop, name="ident3d-parent-watch", daemon=True).start()


def _worker_init(parent: int, counter: Any = None) -> None:
    """Pool initializer: Ctrl-C is the parent's to handle (it stops the pool); exit with the
    parent; close the renderer when the worker exits normally; sweep dead workers' folders;
    take the next worker slot (GPU pinning) from ``counter``."""
    import multiprocessing.util

    global _SLOT
    if counter is not None:
        with counter.get_lock():
            _SLOT = int(counter.value)
            counter.value += 1

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent(parent)
    multiprocessing.util.Finalize(None, _close_renderer, exitpriority=100)
    clean_stale_frame_dirs()


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


class RenderInterrupted(UsageError):
    """SIGTERM (a batch system's time limit) or SIGINT stopped a render. Committed shards are
    kept; ``--resume`` finishes the dataset. Exit status 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(f"stopped by {signal.Signals(self.signum).name}")


class _Signals:
    """While active (main thread only), SIGTERM and SIGINT raise :class:`RenderInterrupted`
    once; inside :meth:`critical` (a shard write or commit) the raise waits for its end."""

    def __init__(self) -> None:
        self.fired: int | None = None
        self.depth = 0
        self.pending = False
        self.old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.fired is not None:
            return
        self.fired = signum
        if self.depth:
            self.pending = True
            return
        raise RenderInterrupted(signum)

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self.old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self.old.items():
            signal.signal(s, h)
        self.old.clear()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if not self.depth and self.pending and self.fired is not None:
            self.pending = False
            raise RenderInterrupted(self.fired)


#: The active signal guard of this process (None outside a render).
SIGNALS: _Signals | None = None


@contextlib.contextmanager
def critical() -> Iterator[None]:
    """Defer a SIGTERM/SIGINT stop until the block (a shard write/commit) is done."""
    if SIGNALS is None:
        yield
    else:
        with SIGNALS.critical():
            yield


@contextlib.contextmanager
def stop_on_signals() -> Iterator[_Signals]:
    """Turn SIGTERM/SIGINT into :class:`RenderInterrupted` for the block (main thread)."""
    global SIGNALS
    outer = SIGNALS
    guard = _Signals()
    with guard:
        SIGNALS = guard
        try:
            yield guard
        finally:
            SIGNALS = outer


def _kill_pool(pool: ProcessPoolExecutor, pending: Iterable[Future[Any]]) -> None:
    """Stop a pool now: cancel what waits, terminate (then kill) its processes, remove their
    hand-off folders. Running chunks are lost (they are re-rendered by ``--resume``)."""
    for f in pending:
        f.cancel()
    procs = list((getattr(pool, "_processes", None) or {}).values())
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    deadline = time.monotonic() + 5.0
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join(5.0)
    # A worker killed while sending a result leaves a partial message in the result pipe and
    # the pool's manager thread blocked reading the rest (shutdown would wait forever). With
    # the workers dead, closing this process's write end gives that read an EOF.
    with contextlib.suppress(Exception):
        pool._result_queue._writer.close()  # type: ignore[attr-defined]
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None:
        manager.join(10.0)
    clean_stale_frame_dirs(pids=[p.pid for p in procs if p.pid])


def _run(
    spec: WorkerSpec, tasks: Iterator[Task], workers: int
) -> Iterator[tuple[int, int, np.ndarray, dict[str, float]]]:
    """Render tasks in ``workers`` spawned processes (0: here), yielding results as they come.

    SIGTERM/SIGINT raise :class:`RenderInterrupted` (in the caller too, between results);
    any error or an early close stops the workers at once."""
    with stop_on_signals():
        if workers == 0:
            for t in tasks:
                yield render_task(spec, t)
            return
        yield from _run_pool(spec, tasks, workers)


def _run_pool(
    spec: WorkerSpec, tasks: Iterator[Task], workers: int
) -> Iterator[tuple[int, int, np.ndarray, dict[str, float]]]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(os.getpid(), ctx.Value("i", 0)),
    )
    pending: set[Future[Any]] = set()
    ok = False
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
        ok = True
    finally:
        if ok:
            pool.shutdown(wait=True, cancel_futures=True)
        else:
            _kill_pool(pool, pending)
