"""Conversion of an original-layout folder into a dataset: :func:`convert_original` (parallel
PNG decoding, bounded in memory; nothing kept on failure).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.store.format import (
    _TMP_RE,
    DEFAULT_COMPRESSION,
    DEFAULT_SHARD_SIZE,
    LOCK_NAME,
    MANIFEST_NAME,
    _compression_kwargs,
    _is_enospc,
    remove_stale_temp_files,
    shard_range,
)
from ident3d.store.layouts import scan_original_layout
from ident3d.store.layouts.causal3dident import read_class_names
from ident3d.store.layouts.common import _decode_png
from ident3d.store.manifest import _remove_store_files, create_dataset, manifest_lock
from ident3d.store.writer import ShardWriter

#: Raw-latent column count -> the 3dident preset's latent mode that maps it to scene units.
MODE_BY_RAW_DIM = {10: "box", 11: "periodic"}


def _preset_mapping(mode: str) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """The 3dident preset's raw->scene mapping of ``mode`` (via :mod:`ident3d.latents`)."""
    from ident3d.latents import LatentMapping

    table: dict[str, Any] | None = None
    try:
        from ident3d.scenes import load_preset

        table = load_preset("3dident").data["latents"]["modes"][mode]
    except Exception:  # the preset is data; fall back to the mapping's documented defaults
        table = None
    mapping = (
        LatentMapping.from_preset_mode(mode, table)
        if table is not None
        else LatentMapping(mode=mode, kind=mode)
    )
    return mapping.to_scene, mapping.to_config()


def _decode_batch(task: tuple[list[str], tuple[int, int] | None]) -> np.ndarray:
    paths, shape = task
    out = None
    for j, p in enumerate(paths):
        img = _decode_png(p)
        if out is None:
            if shape is not None and img.shape[:2] != shape:
                raise DataError(f"{p} is {img.shape[1]} x {img.shape[0]} pixels; the others are "
                                f"{shape[1]} x {shape[0]}.")  # fmt: skip
            out = np.empty((len(paths), *img.shape), np.uint8)
        elif img.shape != out.shape[1:]:
            raise DataError(f"{p} is {img.shape[1]} x {img.shape[0]} pixels; the others are "
                            f"{out.shape[2]} x {out.shape[1]}.")  # fmt: skip
        out[j] = img
    assert out is not None
    return out


def _worker_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Any:
    import multiprocessing as mp

    return mp.get_context("spawn").Pool(workers, initializer, initargs)


def _bounded_map(
    pool: Any, fn: Callable[[Any], Any], jobs: Sequence[Any], window: int
) -> Iterator[Any]:
    """``pool.imap`` in order, but with at most ``window`` jobs in flight, so decoded images
    never pile up in memory when writing is slower than decoding."""
    pending: collections.deque[Any] = collections.deque()
    it = iter(jobs)
    for job in itertools.islice(it, window):
        pending.append(pool.apply_async(fn, (job,)))
    while pending:
        result = pending.popleft().get()
        for job in itertools.islice(it, 1):
            pending.append(pool.apply_async(fn, (job,)))
        yield result


def _prepare_dst(dst: Path, overwrite: bool, resume: bool) -> bool:
    """Check DST for convert and clear what an earlier conversion left there that must go;
    returns whether DST was created here.

    ``overwrite``: the manifest, every shard and the temporary files of writers that are gone
    are removed (a live writer's temporary file is left alone). ``resume``: committed shards
    stay, temporary files of writers that are gone are removed."""
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"{dst} exists and is not a directory.")
    if dst.exists():
        has_manifest = (dst / MANIFEST_NAME).exists()
        others = [e.name for e in os.scandir(dst) if e.name != LOCK_NAME]
        if has_manifest and not (overwrite or resume):
            raise UsageError(
                f"{dst} already holds a dataset; pass --resume to continue an interrupted "
                f"conversion or --overwrite to replace it."
            )
        if others and not has_manifest and not overwrite:
            store_only = all(_TMP_RE.match(name) for name in others)
            if store_only and not resume:
                raise UsageError(
                    f"{dst} holds only temporary files of an interrupted conversion; pass "
                    f"--resume to continue it or --overwrite to start again."
                )
            if not store_only:
                raise UsageError(f"{dst} is not empty; choose a new folder or pass --overwrite.")
        with manifest_lock(dst):
            if overwrite:
                _remove_store_files(dst)
            else:
                remove_stale_temp_files(dst)
        return False
    return True


def _cleanup_dst(dst: Path, created: bool) -> None:
    with contextlib.suppress(OSError):
        _remove_store_files(dst)
    if created:
        with contextlib.suppress(OSError):
            (dst / LOCK_NAME).unlink()
        with contextlib.suppress(OSError):
            dst.rmdir()


def convert_original(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    workers: int | None = None,
    overwrite: bool = False,
    compression: str = DEFAULT_COMPRESSION,
    shard_size: int = DEFAULT_SHARD_SIZE,
    split: str | None = None,
    progress: bool = True,
    batch: int = 32,
    resume: bool = False,
) -> Path:
    """Pack an original 3DIdent or Causal3DIdent folder into a dataset at ``dst``.

    3DIdent: ``SRC/raw_latents.npy``, optional ``SRC/latents.npy``, ``SRC/images/<i>.png``.
    3DIdentBox: ``SRC/samples/m1|m2/<i>.png`` and ``SRC/factors/m1|m2/raw_latents.npy`` (and
    ``latents.npy``) become a ``pairs`` dataset, view 0 = m1, view 1 = m2.
    Causal3DIdent: ``SRC/trainset/`` or ``SRC/testset/`` (``split`` picks one when both exist)
    or the split folder itself, with ``raw_latents_<c>.npy`` and ``images_<c>/<i>.png`` per class
    ``c`` (optional ``latents_<c>.npy``); classes are concatenated in class order and stored as
    the ``class`` column. Without scene latents, they are computed from the raw ones by the
    3dident preset's mapping for their column count (10: box mode, 11: periodic mode; see
    :data:`MODE_BY_RAW_DIM`), and the manifest says so. PNGs are decoded by ``workers``
    processes (default: all cores); pixels are stored exactly. On any failure everything written
    to ``dst`` is removed again. ``resume`` continues a conversion that was killed: the shards
    it committed are kept, the others converted (the result is the same as an uninterrupted
    run); a failing resumed run keeps the committed shards too, so it can be resumed again.
    ``overwrite`` removes everything of an earlier conversion first. Returns ``dst``.
    """
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other: choose one.")
    src, dst = Path(src), Path(dst)
    _compression_kwargs(compression)
    if not isinstance(shard_size, int) or shard_size < 1:
        raise UsageError(f"--shard-size must be a positive integer, got {shard_size!r}.")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}.")
    layout, base, parts = scan_original_layout(src, split)
    pairs = layout == "3didentbox"  # its two parts are the views m1 and m2
    join = (lambda xs: np.stack(xs, axis=1)) if pairs else np.concatenate
    raw = join([p.raw for p in parts]).astype(np.float32)
    n, raw_dim = raw.shape[0], raw.shape[-1]
    if all(p.scene is not None for p in parts):
        scene = join([p.scene for p in parts]).astype(np.float32)  # type: ignore[misc]
        scene_source: Any = {
            "3dident": "latents.npy",
            "3didentbox": "factors/m1|m2/latents.npy",
        }.get(layout, "latents_<c>.npy")
    else:
        if raw_dim not in MODE_BY_RAW_DIM:
            raise DataError(
                f"{base} has {raw_dim}-column raw latents and no scene latents file; only "
                f"10-column (box-mode) and 11-column (periodic-mode) raw latents can be mapped "
                f"to scene units."
            )
        to_scene, mapping_cfg = _preset_mapping(MODE_BY_RAW_DIM[raw_dim])
        scene = np.asarray(to_scene(join([p.raw for p in parts])), np.float32)
        scene_source = {"computed_from_raw": True, "mapping": mapping_cfg}
    if pairs:  # path 2i: view m1 of pair i, 2i + 1: view m2
        paths = [str(p.images_dir / f) for pair in zip(*(q.files for q in parts), strict=True)
                 for p, f in zip(parts, pair, strict=True)]  # fmt: skip
    else:
        paths = [str(p.images_dir / f) for p in parts for f in p.files]
    cls = (
        np.concatenate([np.full(len(p.files), p.cls) for p in parts])
        if layout not in ("3dident", "3didentbox")
        else None
    )
    views = 2 if pairs else 1
    height, width = _decode_png(paths[0]).shape[:2]
    config = {
        "origin": "converted",
        "source": {
            "layout": layout,
            "path": str(base.resolve()),
            "classes": [p.cls for p in parts] if cls is not None else None,
            "n_per_class": [len(p.files) for p in parts] if cls is not None else None,
        },
        "scene_latents": scene_source,
        "resolution": [width, height],
    }
    created = _prepare_dst(dst, overwrite, resume)
    keep_on_failure = resume  # a resumed run never deletes what it continues
    pool = None
    try:
        manifest = create_dataset(
            dst, "pairs" if pairs else "images", n, shard_size, height, width, raw_dim, config,
            factor_table=_factor_table(), compression=compression, overwrite=False,
            has_class=cls is not None,
            class_names=read_class_names(base) if cls is not None else None,
        )  # fmt: skip
        done = {int(e["index"]) for e in manifest["shards"]}
        todo = [k for k in range(manifest["num_shards"]) if k not in done]
        tasks: list[tuple[int, int, int]] = []  # (shard, local start, stop)
        for k in todo:
            start, count = shard_range(manifest, k)
            tasks += [(k, j, min(j + batch, count)) for j in range(0, count, batch)]
        jobs = [([paths[(shard_range(manifest, k)[0] + j) * views + v] for j in range(a, b)
                  for v in range(views)], (height, width)) for k, a, b in tasks]  # fmt: skip
        if workers > 1 and len(jobs) > 1:
            pool = _worker_pool(min(workers, len(jobs)))
            results: Iterator[np.ndarray] = _bounded_map(pool, _decode_batch, jobs, 4 * workers)
        else:
            results = map(_decode_batch, jobs)
        from tqdm import tqdm

        with tqdm(total=n, unit="img", desc="convert", disable=not progress) as bar:
            bar.update(sum(shard_range(manifest, k)[1] for k in done))
            pos = 0
            for k in todo:
                start, count = shard_range(manifest, k)
                with ShardWriter(dst, k, start, count, "pairs" if pairs else "images", height,
                                 width, raw_dim, has_class=cls is not None) as w:  # fmt: skip
                    while pos < len(tasks) and tasks[pos][0] == k:
                        _, a, b = tasks[pos]
                        images = next(results)
                        if pairs:
                            images = images.reshape(b - a, 2, *images.shape[1:])
                        g = slice(start + a, start + b)
                        w.write_batch(
                            a, images, raw[g], scene[g], cls[g] if cls is not None else None
                        )
                        bar.update(b - a)
                        pos += 1
    except BaseException as exc:
        if pool is not None:
            pool.terminate()
            pool.join()
            pool = None
        if not keep_on_failure:
            _cleanup_dst(dst, created)
        kept = "the committed shards were kept (--resume continues)" if keep_on_failure else (
            "nothing was kept")  # fmt: skip
        if isinstance(exc, OSError) and _is_enospc(exc):
            raise DataError(f"disk full while converting into {dst}; {kept}.") from None
        if isinstance(exc, DataError) and str(exc).startswith("disk full"):
            raise DataError(f"{str(exc).rstrip('.')}; {kept}.") from None
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return dst


def _factor_table() -> list[dict[str, Any]] | None:
    try:
        from ident3d.latents import factor_table
    except ImportError:  # pragma: no cover - ident3d.latents ships with the package
        return None
    return factor_table()
