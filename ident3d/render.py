"""Render datasets: planning, per-sample seeds, the worker pool, progress and resume (no bpy).

``ident3d render`` calls :func:`render_dataset`. The main process plans everything and holds
the dataset store; worker processes only render:

1. **Plan.** The dataset is cut into the store's shards (``shard k`` = samples ``[k * size,
   (k + 1) * size)``). ``--shard I/N`` keeps the I-th of N contiguous groups of shards (like
   the original generator's ``np.array_split``), so a SLURM array or an indexed Kubernetes job
   spreads one dataset over machines. ``--resume`` drops the shards the manifest lists as
   committed.
2. **Latents.** Sample ``i``'s raw latents come from the block-seeded
   :class:`ident3d.latents.LatentModel` (``sample_range``), or from ``--latents FILE``; its
   object class (several ``--object``\\ s) from its own block-seeded stream; its Cycles seeds
   from :func:`frame_seed` (global seed, sample index, view). Nothing depends on the worker
   count, the shard size or the shard selection, so the same seed gives the same latents and
   the same pixels however the work is split.
3. **Render.** Chunks of a few samples go to ``W`` spawned worker processes, each with its
   own Blender (``ident3d.blender.scene.SceneRenderer``, built once per worker) and its own
   thread count (cores / W). Results come back as uint8 arrays and are written by the main
   process through :class:`ident3d.store.ShardWriter` as they arrive; a shard is committed
   (renamed and listed) only when all its samples are in, so a killed run leaves nothing that
   counts as done.

:class:`MockRenderer` is a pure-numpy stand-in with the same interface (a disc for the object,
a lit ellipse for the spotlight, the camera's real projection), used to test this pipeline
without Blender (``renderer="mock"``).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ident3d import store
from ident3d.errors import DataError, UsageError
from ident3d.latents import BLOCK_SIZE, LatentMapping, LatentModel, factor_table
from ident3d.scenes import BUILTIN_SHAPES, MESH_SUFFIXES, Preset, scene_params

INSTALL_HINT = "pip install 'ident3d[render]'"
MIN_RESOLUTION = 16
MAX_RESOLUTION = 16384
RENDERERS = ("blender", "mock")
#: Samples per work item sent to a worker (small: smooth progress, little lost on a kill).
DEFAULT_CHUNK = 4
#: Cap on the default worker count (each worker holds its own Blender, ~0.3-0.5 GB).
MAX_DEFAULT_WORKERS = 8
_CLASS_STREAM = 0x636C6173  # "clas": the object-class stream's own entropy word
_SEED_STREAM = 0x73656564  # "seed": the Cycles-seed stream's own entropy word


# ------------------------------------------------------------------------------ seeds, classes


def frame_seed(seed: int, index: int, view: int = 0) -> int:
    """The Cycles seed of view ``view`` (0 or 1) of sample ``index``: a 31-bit integer derived
    from the global seed and the sample index only."""
    ss = np.random.SeedSequence([_SEED_STREAM, int(seed), int(index), int(view)])
    return int(ss.generate_state(1, np.uint32)[0] & 0x7FFFFFFF)


def sample_classes(n_classes: int, start: int, stop: int, seed: int) -> np.ndarray:
    """Object classes of samples ``start:stop`` (uniform over ``n_classes``), block-seeded like
    the latents so sample ``i``'s class does not depend on the range it is drawn in."""
    out = np.zeros(stop - start, np.int64)
    if n_classes <= 1:
        return out
    for b in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
        rng = np.random.default_rng(
            np.random.SeedSequence([_CLASS_STREAM, int(seed)], spawn_key=(b,))
        )
        blk = rng.integers(0, n_classes, BLOCK_SIZE)
        lo, hi = max(start, b * BLOCK_SIZE), min(stop, (b + 1) * BLOCK_SIZE)
        out[lo - start : hi - start] = blk[lo - b * BLOCK_SIZE : hi - b * BLOCK_SIZE]
    return out


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``None`` stays ``None``."""
    if spec is None:
        return None
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise UsageError(f"--shard must look like I/N (e.g. 0/4), got {spec!r}.") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {spec}: need 0 <= I < N.")
    return i, n


def select_shards(num_shards: int, shard: tuple[int, int] | None) -> list[int]:
    """Store shards handled by ``--shard I/N``: the I-th of N contiguous groups."""
    if shard is None:
        return list(range(num_shards))
    i, n = shard
    return [int(k) for k in np.array_split(np.arange(num_shards), n)[i]]


# ------------------------------------------------------------------------------ the job


@dataclass
class RenderJob:
    """Everything that determines a dataset's content (recorded in its manifest)."""

    preset: Preset
    mode: str
    quality: str
    resolution: int
    objects: list[str]
    pairs: bool
    n: int
    seed: int
    model: LatentModel | None = None
    latents: np.ndarray | None = None  # --latents FILE: (n, raw_dim) or (n, 2, raw_dim)
    latents_source: dict[str, Any] | None = None
    renderer: str = "blender"
    gpu: bool = False
    shard_size: int = store.DEFAULT_SHARD_SIZE
    mapping: LatentMapping = field(init=False)

    def __post_init__(self) -> None:
        self.mapping = self.preset.mapping(self.mode)
        self.quality_settings = self.preset.quality(self.quality)
        self.seed_per_sample = bool(self.preset.data["render"].get("seed_per_sample", True))
        self._blocks: dict[int, np.ndarray] = {}

    @property
    def kind(self) -> str:
        return "pairs" if self.pairs else "images"

    @property
    def views(self) -> int:
        return 2 if self.pairs else 1

    @property
    def class_names(self) -> list[str] | None:
        if len(self.objects) <= 1:
            return None
        return [o if o in BUILTIN_SHAPES else Path(o).stem for o in self.objects]

    def raw_range(self, start: int, stop: int) -> np.ndarray:
        """Raw latents of samples ``start:stop``: ``(k, raw_dim)`` or ``(k, 2, raw_dim)``."""
        if self.latents is not None:
            return np.asarray(self.latents[start:stop], np.float64)
        assert self.model is not None
        parts = []
        for b in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
            if b not in self._blocks:
                if len(self._blocks) >= 2:  # keep the two most recent blocks
                    self._blocks.pop(next(iter(self._blocks)))
                self._blocks[b] = self.model.sample_range(
                    b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE, self.seed, pairs=self.pairs
                )
            lo, hi = max(start, b * BLOCK_SIZE), min(stop, (b + 1) * BLOCK_SIZE)
            parts.append(self._blocks[b][lo - b * BLOCK_SIZE : hi - b * BLOCK_SIZE])
        return (
            np.concatenate(parts) if parts else self.model.sample_range(0, 0, self.seed, self.pairs)
        )

    def seeds(self, start: int, stop: int) -> np.ndarray:
        """Cycles seeds ``(k, views)`` of samples ``start:stop``."""
        out = np.empty((stop - start, self.views), np.int64)
        for j, i in enumerate(range(start, stop)):
            for v in range(self.views):
                out[j, v] = frame_seed(self.seed, i, v) if self.seed_per_sample else self.seed
        return out

    def config(self) -> dict[str, Any]:
        """JSON-ready record of everything that fixes the pixels (not workers, not shards)."""
        cfg: dict[str, Any] = {
            "command": "render",
            "preset": self.preset.to_config(),
            "mode": self.mode,
            "mapping": self.mapping.to_config(),
            "quality": {"name": self.quality, **self.quality_settings},
            "resolution": self.resolution,
            "objects": list(self.objects),
            "pairs": self.pairs,
            "n": self.n,
            "seed": self.seed,
            "seed_per_sample": self.seed_per_sample,
            "renderer": self.renderer,
        }
        if self.latents_source is not None:
            cfg["latents_file"] = self.latents_source
        else:
            assert self.model is not None
            cfg["latent_model"] = self.model.to_config()
        return cfg


def load_latents_file(path: str | os.PathLike[str], raw_dim: int) -> tuple[np.ndarray, bool]:
    """Read ``--latents FILE`` (.npy): ``(N, raw_dim)`` singles or ``(N, 2, raw_dim)`` pairs."""
    p = Path(path)
    if p.suffix != ".npy":
        raise UsageError(f"--latents must be an .npy file, got {p}.")
    if not p.is_file():
        raise UsageError(f"--latents file not found: {p}.")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {p}: {exc}.") from None
    if z.ndim == 2 and z.shape[1] == raw_dim:
        pairs = False
    elif z.ndim == 3 and z.shape[1:] == (2, raw_dim):
        pairs = True
    else:
        raise DataError(
            f"{p} holds an array of shape {z.shape}; expected (N, {raw_dim}) raw latents "
            f"or (N, 2, {raw_dim}) pairs for this latent mode."
        )
    if len(z) == 0:
        raise DataError(f"{p} holds no latents.")
    if not np.issubdtype(z.dtype, np.number) or not np.isfinite(z).all():
        raise DataError(f"{p} holds non-numeric, NaN or infinite values.")
    return z.astype(np.float64), pairs


def check_objects(objects: Sequence[str]) -> list[str]:
    """Validate ``--object`` values: built-in shape names or readable mesh files."""
    out = []
    for o in objects:
        if o in BUILTIN_SHAPES:
            out.append(o)
            continue
        p = Path(o)
        if p.suffix.lower() not in MESH_SUFFIXES:
            raise UsageError(
                f"--object {o}: not a built-in shape ({', '.join(BUILTIN_SHAPES)}) nor a mesh "
                f"file ({', '.join(MESH_SUFFIXES)})."
            )
        if not p.is_file():
            raise UsageError(f"--object {o}: mesh file not found.")
        out.append(str(p.resolve()))
    if not out:
        raise UsageError("at least one --object is needed.")
    return out


def check_resolution(resolution: int) -> int:
    if not MIN_RESOLUTION <= int(resolution) <= MAX_RESOLUTION:
        raise UsageError(
            f"--resolution {resolution} is impossible; use {MIN_RESOLUTION}..{MAX_RESOLUTION} "
            "pixels (224 is the 3DIdent size)."
        )
    return int(resolution)


def require_bpy() -> None:
    """One clear error if Blender's Python module is missing."""
    if importlib.util.find_spec("bpy") is None:
        raise UsageError(
            f"rendering needs Blender as a Python module (bpy 5.0.1); install it with: "
            f"{INSTALL_HINT}"
        )


def blender_version() -> str | None:
    """bpy's version from its package metadata (without importing it)."""
    from importlib import metadata

    try:
        return metadata.version("bpy")
    except metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------ mock renderer


class MockRenderer:
    """A pure-numpy stand-in for :class:`ident3d.blender.scene.SceneRenderer`.

    Same constructor and ``render(frame, seed, object_class)``; draws the ground in its colour
    (clipped to [0, 1]), the spotlight's lit ellipse where the spotlight points, and the object
    as a shaded disc at the camera projection of its location, its radius set by the class and
    squeezed by the rotation. Deterministic; a little seeded noise stands in for path-tracing
    noise. Used to test the pipeline without Blender.
    """

    def __init__(
        self,
        preset: Mapping[str, Any],
        quality: Mapping[str, Any],
        resolution: int,
        objects: Sequence[str] = ("teapot",),
        threads: int = 0,
        gpu: bool = False,
    ) -> None:
        if gpu:
            raise UsageError("--gpu needs the Blender renderer (the mock renderer is CPU-only).")
        self.preset = preset
        self.resolution = int(resolution)
        self.n_classes = len(objects)
        cam = preset["camera"]
        self.cam_loc = np.asarray(cam["location"], np.float64)
        fwd = np.asarray(cam["target"], np.float64) - self.cam_loc
        self.fwd = fwd / np.linalg.norm(fwd)
        right = np.cross(self.fwd, [0.0, 0.0, 1.0])
        self.right = right / np.linalg.norm(right)
        self.up = np.cross(self.right, self.fwd)
        self.focal = float(cam["lens_mm"]) / float(cam["sensor_width_mm"])
        self.size = float(preset["object"]["size"])
        self.noise = 2.0 / math.sqrt(float(quality["samples"]))
        self.timings: dict[str, float] = {"apply": 0.0, "render": 0.0, "handoff": 0.0}
        self.frames = 0
        r = self.resolution
        yy, xx = np.mgrid[0:r, 0:r].astype(np.float64)
        self.u = (xx + 0.5) / r - 0.5  # image-plane coordinates in sensor widths
        self.v = 0.5 - (yy + 0.5) / r
        # ground intersection of each pixel's ray (z = -S)
        d = (
            self.fwd[None, None, :] * self.focal
            + self.u[..., None] * self.right[None, None, :]
            + self.v[..., None] * self.up[None, None, :]
        )
        t = (-self.size - self.cam_loc[2]) / np.minimum(d[..., 2], -1e-9)
        self.ground_xy = self.cam_loc[None, None, :2] + t[..., None] * d[..., :2]

    def project(self, p: np.ndarray) -> tuple[float, float, float]:
        """Pixel column, row and depth of scene point ``p``."""
        rel = np.asarray(p, np.float64) - self.cam_loc
        depth = float(rel @ self.fwd)
        u = self.focal * float(rel @ self.right) / depth
        v = self.focal * float(rel @ self.up) / depth
        r = self.resolution
        return (u + 0.5) * r, (0.5 - v) * r, depth

    def render(self, frame: Mapping[str, Any], seed: int, object_class: int = 0) -> np.ndarray:
        t0 = time.perf_counter()
        r = self.resolution
        ground = np.clip(np.asarray(frame["ground_color"], np.float64), 0.0, 1.0)
        img = np.broadcast_to(ground * 0.35, (r, r, 3)).copy()
        # spotlight: lit ellipse on the ground, around where the spot's axis meets it
        spot = np.asarray(frame["spot_location"], np.float64)
        obj = np.asarray(frame["object_location"], np.float64)
        axis = obj - spot
        t = (-self.size - spot[2]) / min(axis[2], -1e-9)
        hit = spot[:2] + t * axis[:2]
        d2 = ((self.ground_xy - hit) ** 2).sum(-1)
        lit = np.exp(-d2 / (2 * (0.35 * self.size) ** 2))
        spot_col = np.clip(np.asarray(frame["spot_color"], np.float64), 0.0, 1.0)
        img += 0.6 * lit[..., None] * spot_col * np.maximum(ground, 0.2)
        # object: a disc, radius from class and rotation
        col, row, depth = self.project(obj)
        rot = np.asarray(frame["object_rotation"], np.float64)
        radius_scene = 0.5 * self.size * (0.6 + 0.4 * (object_class + 1) / self.n_classes)
        rad = self.focal * radius_scene / depth * r
        squeeze = 0.55 + 0.45 * abs(math.cos(rot[0])) * (0.75 + 0.25 * math.cos(2 * rot[1]))
        ang = rot[2]
        yy, xx = np.mgrid[0:r, 0:r].astype(np.float64) + 0.5
        dx, dy = xx - col, yy - row
        a = dx * math.cos(ang) + dy * math.sin(ang)
        b = -dx * math.sin(ang) + dy * math.cos(ang)
        inside = (a / rad) ** 2 + (b / (rad * squeeze)) ** 2 <= 1.0
        shade = np.clip(0.55 + 0.45 * (-dy / max(rad, 1e-6)), 0.2, 1.0)
        obj_col = np.clip(np.asarray(frame["object_color"], np.float64), 0.0, 1.0)
        img[inside] = (shade[inside, None] * obj_col) * 0.9 + 0.1 * spot_col
        rng = np.random.default_rng(int(seed))
        img += rng.normal(0.0, self.noise / 255.0, img.shape)
        out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        self.timings["render"] += time.perf_counter() - t0
        self.frames += 1
        return out

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ workers

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


# ------------------------------------------------------------------------------ orchestration


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
            flat = scene.reshape(-1, scene.shape[-1])
            params = scene_params(job.preset, flat, job.mode)
            frames: list[list[dict[str, np.ndarray]]] = []
            for j in range(b - a):
                views = []
                for v in range(job.views):
                    idx = j * job.views + v
                    views.append({key: val[idx] for key, val in params.items()})
                frames.append(views)
            yield Task(
                k,
                lo,
                frames,
                job.seeds(a, b),
                sample_classes(len(job.objects), a, b, job.seed),
            )


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
        cls = sample_classes(len(job.objects), a, a + k, job.seed) if len(job.objects) > 1 else None
        imgs = images if job.pairs else images[:, 0]
        w.write_batch(local_start, imgs, raw, scene, cls)
        written += k
        if written == w.count:
            del self.open[shard]
            w.__exit__(None, None, None)
            self.done.append(shard)
        else:
            self.open[shard] = (w, written)

    def abort(self, exc: BaseException) -> None:
        for w, _ in self.open.values():
            w.__exit__(type(exc), exc, exc.__traceback__)
        self.open.clear()


def prepare_dataset(
    job: RenderJob, out: Path, compression: str, overwrite: bool, resume: bool
) -> dict[str, Any]:
    """Create the dataset (or re-open it for ``--resume`` / other shards)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory.")
    manifest = store.create_dataset(
        out,
        kind=job.kind,
        n=job.n,
        shard_size=job.shard_size,
        height=job.resolution,
        width=job.resolution,
        raw_dim=job.mapping.raw_dim,
        config=job.config(),
        factor_table=factor_table(),
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
    """Render ``job`` into the dataset directory ``out`` (see the module docstring).

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
    out_existed = out.exists()
    created = not (out / store.MANIFEST_NAME).exists()
    manifest = prepare_dataset(job, out, compression, overwrite, resume)
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
    )
    writers = _Writers(job, out, compression)
    bar = _progress_bar(total * job.views, progress)
    stats: dict[int, dict[str, float]] = {}
    samples = 0
    try:
        for sh, lo, images, st in _run(spec, iter_tasks(job, out, todo, chunk), workers):
            writers.write(sh, lo, images)
            samples += images.shape[0]
            stats[int(st["pid"])] = st
            if bar is not None:
                bar.update(images.shape[0] * job.views)
            if on_chunk is not None:
                on_chunk(sh, samples)
    except BaseException as exc:
        writers.abort(exc)
        if created:
            _remove_if_empty(out, remove_dir=not out_existed)
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
    for name in (store.MANIFEST_NAME, store.LOCK_NAME):
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


# ------------------------------------------------------------------------------ traversal


def traversal_latents(
    mapping: LatentMapping, steps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scene latents for a traversal grid: ``(steps, 10, 10)`` (row = step, column = factor
    varied) and the per-factor values ``(steps, 10)``. Ranges are the min..max of the mode's
    scene values over 4096 seeded samples; the other factors sit at their median."""
    model = LatentModel(mapping.default_space())
    scene = mapping.to_scene(model.sample(4096, seed))
    lo, hi = scene.min(axis=0), scene.max(axis=0)
    base = np.median(scene, axis=0)
    values = np.linspace(lo, hi, steps)  # (steps, 10)
    grid = np.broadcast_to(base, (steps, scene.shape[1], scene.shape[1])).copy()
    for j in range(scene.shape[1]):
        grid[:, j, j] = values[:, j]
    return grid, values


def render_scene_latents(
    preset: Preset,
    mode: str,
    scene_latents: np.ndarray,
    *,
    quality: str,
    resolution: int,
    objects: Sequence[str] = ("teapot",),
    workers: int = 1,
    seed: int = 0,
    renderer: str = "blender",
    gpu: bool = False,
) -> np.ndarray:
    """Render scene-unit latents ``(N, 10)`` directly (no dataset); returns ``(N, H, W, 3)``."""
    if renderer == "blender":
        require_bpy()
    resolution = check_resolution(resolution)
    objects = check_objects(objects)
    lat = np.asarray(scene_latents, np.float64)
    params = scene_params(preset, lat, mode)
    spec = WorkerSpec(
        renderer,
        preset.data,
        preset.quality(quality),
        resolution,
        tuple(objects),
        default_threads(max(workers, 1)),
        gpu,
    )
    frames = [[{k: v[i] for k, v in params.items()}] for i in range(len(lat))]

    def tasks() -> Iterator[Task]:
        for a in range(0, len(frames), DEFAULT_CHUNK):
            part = frames[a : a + DEFAULT_CHUNK]
            yield Task(0, a, part, np.full((len(part), 1), seed), np.zeros(len(part), np.int64))

    out = np.empty((len(lat), resolution, resolution, 3), np.uint8)
    for _, lo, images, _ in _run(spec, tasks(), workers):
        out[lo : lo + images.shape[0]] = images[:, 0]
    return out


def traversal_figure(
    images: np.ndarray, values: np.ndarray, names: Sequence[str], out: str | os.PathLike[str]
) -> None:
    """Save the grid ``images (steps, factors, H, W, 3)`` with factor names as column titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, nf = images.shape[:2]
    fig, axes = plt.subplots(steps, nf, figsize=(1.25 * nf, 1.25 * steps + 0.4), squeeze=False)
    for i in range(steps):
        for j in range(nf):
            ax = axes[i, j]
            ax.imshow(images[i, j])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"{values[i, j]:+.2f}", fontsize=6, labelpad=1)
            if i == 0:
                ax.set_title(names[j], fontsize=8)
    fig.suptitle(
        "latent traversal: one column per factor, each row a step along it (value below)",
        fontsize=9,
    )
    fig.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.2, rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / (steps + 1)))
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    os.replace(tmp, out)
