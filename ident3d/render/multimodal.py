"""Rendering an image/text dataset (Multimodal3DIdent): images, captions and text latents.

The images come from the same persistent-scene workers as every other render
(:mod:`ident3d.render.workers`: one scene per process, all object classes built once, no
per-image scene rebuild); the latents from :mod:`ident3d.latents.multimodal` and the captions
from :mod:`ident3d.text`, all block-seeded, so sample ``i`` (image, caption, latents) depends on
the seed and ``i`` only. Shards are written by
:class:`~ident3d.store.multimodal.MultimodalShardWriter` (``docs/format.md``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ident3d import store
from ident3d.errors import DataError, UsageError
from ident3d.latents import factor_table
from ident3d.latents.multimodal import (
    IMAGE_COLUMNS,
    TEXT_COLUMNS,
    TEXT_INT_COLUMNS,
    MultimodalSpec,
    multimodal_scene_latents,
)
from ident3d.render.dataset import (
    RenderLock,
    RenderSummary,
    _progress_bar,
    _remove_if_empty,
    check_out_dir,
)
from ident3d.render.job import (
    RENDERERS,
    blender_version,
    check_objects,
    check_resolution,
    require_bpy,
)
from ident3d.render.seeds import frame_seed
from ident3d.render.workers import DEFAULT_CHUNK, Task, WorkerSpec, _run, critical, default_threads
from ident3d.scenes import Preset, scene_params
from ident3d.store.format import remove_stale_temp_files
from ident3d.store.multimodal import MODALITY, MultimodalShardWriter
from ident3d.text.pairs import TextSamples, multimodal_samples


@dataclass
class MultimodalJob:
    """Everything that fixes an image/text dataset's content (recorded in its manifest)."""

    preset: Preset
    quality: str
    resolution: int
    n: int
    seed: int
    renderer: str = "blender"
    gpu: bool = False
    shard_size: int = store.DEFAULT_SHARD_SIZE

    def __post_init__(self) -> None:
        self.spec = MultimodalSpec.from_preset(self.preset.data, self.preset.path)
        self.mode = self.preset.data["latents"]["default_mode"]
        self.quality_settings = self.preset.quality(self.quality)
        self.seed_per_sample = bool(self.preset.data["render"].get("seed_per_sample", True))
        self.objects = list(self.preset.object_classes)

    def samples(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, TextSamples]:
        """Image latents ``(k, 11)``, scene latents ``(k, 10)`` and the text of a range."""
        image, text = multimodal_samples(self.spec, start, stop, self.seed)
        return image, multimodal_scene_latents(self.spec, image), text

    def config(self) -> dict[str, Any]:
        return {
            "command": "render",
            "modality": MODALITY,
            "preset": self.preset.to_config(),
            "mode": self.mode,
            "quality": {"name": self.quality, **self.quality_settings},
            "resolution": self.resolution,
            "objects": list(self.objects),
            "pairs": False,
            "n": self.n,
            "seed": self.seed,
            "seed_per_sample": self.seed_per_sample,
            "renderer": self.renderer,
            "multimodal": {
                "image_columns": list(IMAGE_COLUMNS),
                "text_columns": list(TEXT_INT_COLUMNS),
                "csv_text_columns": list(TEXT_COLUMNS),
                "palettes": list(self.spec.palettes),
                "shape_names": list(self.spec.shape_names),
            },
        }


def _tasks(job: MultimodalJob, manifest: dict[str, Any], shards: Sequence[int], chunk: int
           ) -> Iterator[Task]:  # fmt: skip
    for k in shards:
        start, count = store.shard_range(manifest, k)
        for lo in range(0, count, chunk):
            hi = min(count, lo + chunk)
            a, b = start + lo, start + hi
            image, scene, _ = job.samples(a, b)
            params = scene_params(job.preset, scene, job.mode)
            frames = [[{key: v[j] for key, v in params.items()}] for j in range(b - a)]
            seeds = np.array(
                [[frame_seed(job.seed, i, 0) if job.seed_per_sample else job.seed]
                 for i in range(a, b)], np.int64,
            )  # fmt: skip
            yield Task(k, lo, frames, seeds, image[:, 0].astype(np.int64))


def render_multimodal(
    job: MultimodalJob,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    threads: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compression: str = store.DEFAULT_COMPRESSION,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = True,
) -> RenderSummary:
    """Render ``job`` into the dataset directory ``out``; ``workers=0`` renders here."""
    t0 = time.perf_counter()
    out = Path(out)
    if job.renderer not in RENDERERS:
        raise UsageError(f"unknown renderer {job.renderer!r}")
    if job.renderer == "blender":
        require_bpy()
    if workers < 0 or job.shard_size < 1 or chunk < 1 or job.n < 1:
        raise UsageError("--n, --workers, --shard-size must be at least 1.")
    job.resolution = check_resolution(job.resolution)
    objects = check_objects(job.objects)
    check_out_dir(out)
    out_existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RenderLock(out, None)
    except BaseException:
        if not out_existed:
            _remove_if_empty(out, remove_dir=True)
        raise
    created = not (out / store.MANIFEST_NAME).exists()
    try:
        if overwrite and not created:
            with store.manifest_lock(out):
                (out / store.MANIFEST_NAME).unlink(missing_ok=True)
                (out / "vocab.json").unlink(missing_ok=True)  # MultimodalDataset's, now stale
        manifest = store.create_dataset(
            out, kind="images", n=job.n, shard_size=job.shard_size, height=job.resolution,
            width=job.resolution, raw_dim=len(IMAGE_COLUMNS), config=job.config(),
            factor_table=factor_table(), compression=compression, overwrite=overwrite,
            has_class=True, class_names=list(job.spec.shape_names),
            blender_version=blender_version() if job.renderer == "blender" else None,
        )  # fmt: skip
        remove_stale_temp_files(out)
        committed = {int(s["index"]) for s in manifest["shards"]}
        todo = [k for k in range(manifest["num_shards"]) if k not in committed]
        if committed and not resume:
            raise UsageError(
                f"{out} already holds {len(committed)} rendered shard(s) of this dataset; "
                "pass --resume to continue it or --overwrite to start again."
            )
        spec = WorkerSpec(
            renderer=job.renderer, preset=job.preset.data, quality=job.quality_settings,
            resolution=job.resolution, objects=tuple(objects),
            threads=int(threads) if threads else default_threads(max(workers, 1)), gpu=job.gpu,
        )  # fmt: skip
        samples = _render_shards(job, out, manifest, todo, spec, workers, compression, chunk,
                                 progress)  # fmt: skip
    except BaseException:
        if created:
            _remove_if_empty(out, remove_dir=not out_existed)
        raise
    finally:
        lock.release()
    return RenderSummary(
        out=out, samples=samples, images=samples, seconds=time.perf_counter() - t0,
        shards=todo, skipped_shards=sorted(committed),
        complete=store.is_complete(store.read_manifest(out)),
    )  # fmt: skip


def _render_shards(
    job: MultimodalJob,
    out: Path,
    manifest: dict[str, Any],
    todo: list[int],
    spec: WorkerSpec,
    workers: int,
    compression: str,
    chunk: int,
    progress: bool,
) -> int:
    open_w: dict[int, tuple[MultimodalShardWriter, int]] = {}
    bar = _progress_bar(sum(store.shard_range(manifest, k)[1] for k in todo), progress)
    samples = 0
    try:
        tasks = _tasks(job, manifest, todo, chunk)
        with contextlib.closing(_run(spec, tasks, workers)) as results:
            for sh, lo, images, _st in results:
                with critical():
                    if sh not in open_w:
                        start, count = store.shard_range(manifest, sh)
                        w = MultimodalShardWriter(
                            out, sh, start, count, "images", job.resolution, job.resolution,
                            len(IMAGE_COLUMNS), compression=compression, has_class=True,
                        )  # fmt: skip
                        w.__enter__()
                        open_w[sh] = (w, 0)
                    w, written = open_w[sh]
                    k = images.shape[0]
                    a = w.start + lo
                    image, scene, text = job.samples(a, a + k)
                    w.write_batch(lo, images[:, 0], image, scene, image[:, 0].astype(np.int64))
                    w.write_text(lo, text.captions, text.color_names, text.text_latents)
                    written += k
                    if written == w.count:
                        del open_w[sh]
                        w.__exit__(None, None, None)
                    else:
                        open_w[sh] = (w, written)
                samples += k
                if bar is not None:
                    bar.update(k)
    except BaseException as exc:
        result: BaseException = exc
        for w, _ in open_w.values():
            try:
                w.__exit__(type(exc), exc, exc.__traceback__)
            except DataError as err:
                result = err
            except Exception:
                pass
        if result is not exc:
            raise result from None
        raise
    finally:
        if bar is not None:
            bar.close()
    if progress:
        print(f"rendered {samples} image/text pairs", file=sys.stderr)
    return samples
