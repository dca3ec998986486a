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

The package holds one concept per module: :mod:`~ident3d.render.seeds` (per-sample seeds and
classes, ``--shard I/N``), :mod:`~ident3d.render.job` (:class:`RenderJob` and the checks of
its inputs), :mod:`~ident3d.render.mock` (:class:`MockRenderer`),
:mod:`~ident3d.render.workers` (what a worker process runs, and the pool),
:mod:`~ident3d.render.dataset` (:func:`render_dataset`) and :mod:`~ident3d.render.traverse`
(latent traversals). The public names are re-exported here.
"""

from ident3d.render.dataset import (
    RenderSummary,
    check_out_dir,
    check_size,
    iter_tasks,
    prepare_dataset,
    render_dataset,
)
from ident3d.render.fanout import FanoutFailed, FanoutSummary, render_fanout
from ident3d.render.fanout import SlurmOptions as FanoutSlurm
from ident3d.render.job import (
    INSTALL_HINT,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    RENDERERS,
    RenderJob,
    blender_version,
    check_objects,
    check_resolution,
    load_latents_file,
    require_bpy,
)
from ident3d.render.mock import MockRenderer
from ident3d.render.multimodal import MultimodalJob, render_multimodal
from ident3d.render.scheduler_env import resolve_shard
from ident3d.render.seeds import frame_seed, parse_shard, sample_classes, select_shards
from ident3d.render.traverse import render_scene_latents, traversal_figure, traversal_latents
from ident3d.render.workers import (
    DEFAULT_CHUNK,
    MAX_DEFAULT_WORKERS,
    Task,
    WorkerSpec,
    default_threads,
    default_workers,
    make_renderer,
    render_task,
)

# Not public, but benchmarks/bench_render.py reads a worker's memory with it as R._rss_kib.
from ident3d.render.workers import _rss_kib as _rss_kib

__all__ = [
    "DEFAULT_CHUNK",
    "INSTALL_HINT",
    "MAX_DEFAULT_WORKERS",
    "MAX_RESOLUTION",
    "MIN_RESOLUTION",
    "RENDERERS",
    "FanoutFailed",
    "FanoutSlurm",
    "FanoutSummary",
    "MockRenderer",
    "MultimodalJob",
    "RenderJob",
    "RenderSummary",
    "Task",
    "WorkerSpec",
    "blender_version",
    "check_objects",
    "check_out_dir",
    "check_resolution",
    "check_size",
    "default_threads",
    "default_workers",
    "frame_seed",
    "iter_tasks",
    "load_latents_file",
    "make_renderer",
    "parse_shard",
    "prepare_dataset",
    "render_dataset",
    "render_fanout",
    "render_multimodal",
    "render_scene_latents",
    "render_task",
    "require_bpy",
    "resolve_shard",
    "sample_classes",
    "select_shards",
    "traversal_figure",
    "traversal_latents",
]
