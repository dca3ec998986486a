"""Rendering a dataset: plan the work, feed the workers, write and commit shards, resume."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ident3d import store
from ident3d.errors import DataError, UsageError
from ident3d.render.gpus import with_workers
from ident3d.render.job import (
    RENDERERS,
    RenderJob,
    blender_version,
    check_objects,
    check_resolution,
    require_bpy,
)
from ident3d.render.seeds import select_shards
from ident3d.render.workers import (
    DEFAULT_CHUNK,
    Task,
    WorkerSpec,
    _run,
    critical,
    default_threads,
)
from ident3d.resources import free_disk
from ident3d.scenes import scene_params
from ident3d.store.format import _TMP_MARK, remove_stale_temp_files

#: Held (POSIX byte-range locks, one byte per shard) by a render while it writes shards.
RENDER_LOCK_NAME = ".render.lock"
#: Optimistic size of a compressed image relative to raw uint8 pixels, for the free-disk check:
#: a render is refused only if even this would not fit.
COMPRESSED_FRACTION = {"none": 1.0, "lz4": 0.25, "gzip": 0.2}


@dataclass
class RenderSummary:
    """What a render did."""

    out: Path
    samples: int
    images: int
    seconds: float
    shards: list[int]
    skipped_shards: list[int]
    complete: bool
    worker_stats: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def line(self) -> str:
        state = "dataset complete" if self.complete else "dataset incomplete (other shards pending)"
        return (
            f"rendered {self.images} images ({self.samples} samples) in {self.seconds:.1f} s "
            f"({self.images_per_s:.2f} images/s) -> {self.out} [{state}]"
        )


def iter_tasks(job: RenderJob, root: Path, shards: Sequence[int], chunk: int) -> Iterator[Task]:
    """Work items of the selected shards, in order."""
    manifest = store.read_manifest(root)
    for k in shards:
        start, count = store.shard_range(manifest, k)
        for lo in range(0, count, chunk):
            hi = min(count, lo + chunk)
            a, b = start + lo, start + hi
            raw = job.raw_range(a, b)
            scene = job.mapping.to_scene(raw)
            scene = scene.reshape(b - a, job.views, scene.shape[-1])
            # each view with its own preset values ([views.N] of the preset)
            params = [
                scene_params(job.view_presets[v], scene[:, v], job.mode) for v in range(job.views)
            ]
            frames: list[list[dict[str, np.ndarray]]] = []
            for j in range(b - a):
                views = []
                for v in range(job.views):
                    frame = {key: val[j] for key, val in params[v].items()}
                    frame["view"] = np.int64(v)
                    views.append(frame)
                frames.append(views)
            yield Task(k, lo, frames, job.seeds(a, b), job.classes(a, b))


class _Writers:
    """Open shard writers, fed chunk by chunk; a shard commits when its last sample lands."""

    def __init__(self, job: RenderJob, root: Path, compression: str | None) -> None:
        self.job, self.root, self.compression = job, root, compression
        self.manifest = store.read_manifest(root)
        self.open: dict[int, tuple[store.ShardWriter, int]] = {}
        self.done: list[int] = []

    def write(self, shard: int, local_start: int, images: np.ndarray) -> None:
        job = self.job
        if shard not in self.open:
            start, count = store.shard_range(self.manifest, shard)
            w = store.ShardWriter(
                self.root,
                shard,
                start,
                count,
                job.kind,
                job.resolution,
                job.resolution,
                job.mapping.raw_dim,
                compression=self.compression,
                has_class=len(job.objects) > 1,
            )
            w.__enter__()
            self.open[shard] = (w, 0)
        w, written = self.open[shard]
        k = images.shape[0]
        a = w.start + local_start
        raw = job.raw_range(a, a + k)
        scene = job.mapping.to_scene(raw)
        cls = job.classes(a, a + k) if len(job.objects) > 1 else None
        imgs = images if job.pairs else images[:, 0]
        w.write_batch(local_start, imgs, raw, scene, cls)
        written += k
        if written == w.count:
            del self.open[shard]
            w.__exit__(None, None, None)
            self.done.append(shard)
        else:
            self.open[shard] = (w, written)

    def abort(self, exc: BaseException) -> BaseException:
        """Discard every open shard; return the error to raise (disk full becomes one)."""
        result = exc
        for w, _ in self.open.values():
            try:
                w.__exit__(type(exc), exc, exc.__traceback__)
            except DataError as err:  # disk full, reworded by the writer
                result = err
            except Exception:
                pass
        self.open.clear()
        return result


def check_out_dir(out: Path) -> None:
    """``--out`` must be absent, empty or an ident3d dataset (never a folder of other files)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory.")
    if (out / store.MANIFEST_NAME).exists():
        return
    ours = {store.LOCK_NAME, RENDER_LOCK_NAME}
    others = sorted(
        e.name
        for e in os.scandir(out)
        if e.name not in ours and not (e.name.startswith(".") and _TMP_MARK in e.name)
    )
    if others:
        raise UsageError(
            f"--out {out} holds other files ({others[0]}"
            + (f" and {len(others) - 1} more" if len(others) > 1 else "")
            + ") and is not an ident3d dataset; give an empty or new folder."
        )


def check_size(job: RenderJob, out: Path, shard: tuple[int, int] | None, compression: str) -> None:
    """Refuse a render whose images cannot fit on the disk of ``out`` (before writing)."""
    num = math.ceil(job.n / job.shard_size)
    if shard is not None:
        i, groups = shard
        size, extra = divmod(num, groups)
        num = size + (1 if i < extra else 0)
    samples = min(job.n, num * job.shard_size)
    per_sample = job.views * job.resolution * job.resolution * 3
    need = int(samples * per_sample * COMPRESSED_FRACTION.get(compression, 0.2))
    disk = free_disk(out)
    if disk is None:
        return
    base, free = disk
    if need > free:
        raise UsageError(
            f"--n {job.n}: {samples} samples need about {_gib(need)} on {base}, "
            f"which has {_gib(free)} free; render fewer samples or a --shard group."
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n < 2**60 else f"{n / 2**60:.3g} EiB"


class RenderLock:
    """POSIX byte-range locks on ``ROOT/.render.lock``: byte ``k`` for shard ``k`` (or all,
    for --overwrite). Two renders of disjoint ``--shard`` groups run together; a second render
    of shards another is writing is refused. Released when the process ends (even on SIGKILL).
    """

    def __init__(self, root: Path, shards: Sequence[int] | None) -> None:
        self.path = root / RENDER_LOCK_NAME
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if shards is None:
                self._lock(0, 0)
            else:
                for lo, hi in _runs(shards):
                    self._lock(lo, hi - lo)
        except BaseException:
            os.close(self.fd)
            raise

    def _lock(self, start: int, length: int) -> None:
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):  # locks do not work here (NFS
                return  # without a lock daemon): go on; commits are safe through records
            raise UsageError(
                f"another render is writing shards of {self.path.parent}"
                + (f" (shard {start})" if length else "")
                + "; wait for it to end, or render another --shard group."
            ) from None

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def _runs(shards: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Contiguous runs ``[lo, hi)`` of sorted shard indices."""
    lo = prev = None
    for k in sorted(shards):
        if lo is None:
            lo = prev = k
        elif k == prev + 1:  # type: ignore[operator]
            prev = k
        else:
            yield lo, prev + 1  # type: ignore[operator]
            lo = prev = k
    if lo is not None:
        yield lo, prev + 1  # type: ignore[operator]


def prepare_dataset(
    job: RenderJob, out: Path, compression: str, overwrite: bool, resume: bool
) -> dict[str, Any]:
    """Create the dataset (or re-open it for ``--resume`` / other shards)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory.")
    if overwrite and (out / store.MANIFEST_NAME).exists():
        # create_dataset keeps a dataset of the same plan as it is, shards and all; --overwrite
        # means start again, so drop its manifest first (its shards go in create_dataset).
        with store.manifest_lock(out):
            (out / store.MANIFEST_NAME).unlink(missing_ok=True)
    manifest = store.create_dataset(
        out,
        kind=job.kind,
        n=job.n,
        shard_size=job.shard_size,
        height=job.resolution,
        width=job.resolution,
        raw_dim=job.mapping.raw_dim,
        config=job.config(),
        factor_table=job.factor_table(),
        pair_structure=job.pair_structure(),
        scm=job.scm_config(),
        compression=compression,
        overwrite=overwrite,
        has_class=len(job.objects) > 1,
        class_names=job.class_names,
        blender_version=blender_version() if job.renderer == "blender" else None,
    )
    return manifest


def render_dataset(
    job: RenderJob,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    threads: int | None = None,
    shard: tuple[int, int] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compression: str = store.DEFAULT_COMPRESSION,
    shard_size: int = store.DEFAULT_SHARD_SIZE,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = True,
    on_chunk: Callable[[int, int], None] | None = None,
) -> RenderSummary:
    """Render ``job`` into the dataset directory ``out`` (see :mod:`ident3d.render`).

    ``workers=0`` renders in this process (debugging, tests). ``on_chunk(shard, samples)`` is
    called after every chunk is written (tests use it to simulate a kill).
    """
    t0 = time.perf_counter()
    out = Path(out)
    if job.renderer not in RENDERERS:
        raise UsageError(f"unknown renderer {job.renderer!r}")
    if job.renderer == "blender":
        require_bpy()
    if workers < 0:
        raise UsageError("--workers must be at least 1.")
    if shard_size < 1:
        raise UsageError("--shard-size must be at least 1.")
    if chunk < 1:
        raise UsageError("chunk must be at least 1.")
    job.shard_size = int(shard_size)
    job.resolution = check_resolution(job.resolution)
    job.objects = check_objects(job.objects)
    check_out_dir(out)
    check_size(job, out, shard, compression)
    out_existed = out.exists()
    planned = select_shards(math.ceil(job.n / job.shard_size), shard)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RenderLock(out, None if overwrite else planned)
    except BaseException:
        if not out_existed:
            _remove_if_empty(out, remove_dir=True)
        raise
    try:
        return _render_locked(
            job, out, out_existed, lock, workers, threads, shard, resume, overwrite,
            compression, chunk, progress, on_chunk, t0,
        )  # fmt: skip
    finally:
        lock.release()


def _render_locked(
    job: RenderJob,
    out: Path,
    out_existed: bool,
    lock: RenderLock,
    workers: int,
    threads: int | None,
    shard: tuple[int, int] | None,
    resume: bool,
    overwrite: bool,
    compression: str,
    chunk: int,
    progress: bool,
    on_chunk: Callable[[int, int], None] | None,
    t0: float,
) -> RenderSummary:
    created = not (out / store.MANIFEST_NAME).exists()
    manifest = prepare_dataset(job, out, compression, overwrite, resume)
    stale = remove_stale_temp_files(out)
    if stale and progress:
        print(
            f"removed {len(stale)} temporary file(s) of interrupted writers in {out}",
            file=sys.stderr,
        )
    selected = select_shards(manifest["num_shards"], shard)
    committed = {int(s["index"]) for s in manifest["shards"]}
    todo = [k for k in selected if k not in committed]
    skipped = [k for k in selected if k in committed]
    if skipped and not resume:
        raise UsageError(
            f"{out} already holds {len(skipped)} rendered shard(s) of this dataset; "
            "pass --resume to continue it or --overwrite to start again."
        )
    total = sum(store.shard_range(manifest, k)[1] for k in todo)
    spec = WorkerSpec(
        renderer=job.renderer,
        preset=job.preset.data,
        quality=job.quality_settings,
        resolution=job.resolution,
        objects=tuple(job.objects),
        threads=int(threads) if threads else default_threads(workers),
        gpu=job.gpu,
        gpu_layout=with_workers(job.gpu_layout, workers) if job.gpu else None,
    )
    writers = _Writers(job, out, compression)
    bar = _progress_bar(total * job.views, progress)
    stats: dict[int, dict[str, float]] = {}
    samples = 0
    try:
        with contextlib.closing(_run(spec, iter_tasks(job, out, todo, chunk), workers)) as results:
            for sh, lo, images, st in results:
                with critical():  # a SIGTERM waits for this chunk's write / shard commit
                    writers.write(sh, lo, images)
                samples += images.shape[0]
                stats[int(st["pid"])] = st
                if bar is not None:
                    bar.update(images.shape[0] * job.views)
                if on_chunk is not None:
                    on_chunk(sh, samples)
    except BaseException as exc:
        err = writers.abort(exc)
        if created:
            _remove_if_empty(out, remove_dir=not out_existed)
        if err is not exc:
            raise err from None
        raise
    finally:
        if bar is not None:
            bar.close()
    final = store.read_manifest(out)
    return RenderSummary(
        out=out,
        samples=samples,
        images=samples * job.views,
        seconds=time.perf_counter() - t0,
        shards=todo,
        skipped_shards=skipped,
        complete=store.is_complete(final),
        worker_stats=stats,
    )


def _remove_if_empty(root: Path, remove_dir: bool) -> None:
    """Undo a dataset this run created if it failed before committing any shard (e.g. no GPU,
    an unreadable mesh): leave ``--out`` as it was."""
    try:
        if store.read_manifest(root)["shards"]:
            return
    except store.DataError:
        return
    for name in (store.MANIFEST_NAME, store.LOCK_NAME, RENDER_LOCK_NAME):
        (root / name).unlink(missing_ok=True)
    if remove_dir:
        try:
            root.rmdir()
        except OSError:  # something else is in there: keep it
            pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.1, file=sys.stderr)
