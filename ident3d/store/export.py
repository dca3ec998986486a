"""Export of a dataset to the original layout: :func:`export_original` (written into a
temporary sibling folder, renamed when complete).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.store.convert import _worker_pool
from ident3d.store.format import _is_enospc, _pid_alive
from ident3d.store.layouts.causal3dident import CLASS_NAMES_FILE
from ident3d.store.reader import open_dataset

_EXPORT_NAMES = re.compile(
    r"^(raw_latents(_\d+)?\.npy|latents(_\d+)?\.npy|images(_\d+)?|view[01]|pairs\.json"
    r"|class_names\.json|samples|factors)$"
)
LAYOUTS = ("auto", "3dident", "3didentbox")


def _partial_re(dst: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(dst.name)}\.partial-(\d+)-[0-9a-f]+$")


def _remove_stale_partials(dst: Path) -> list[Path]:
    """Delete the ``.DST.partial-<pid>-<hex>`` folders of exports to ``dst`` whose process is
    gone (killed); a live exporter's folder is never touched. Returns what was removed."""
    pattern, removed = _partial_re(dst), []
    if not dst.parent.is_dir():
        return removed
    with os.scandir(dst.parent) as it:
        for entry in it:
            m = pattern.match(entry.name)
            if m and entry.is_dir(follow_symlinks=False) and not _pid_alive(int(m.group(1))):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
    return removed


def index_digits(n: int) -> int:
    """Zero padding of image names in the original layout: ceil(log10(n)) digits, so every
    index 0..n-1 fits (6 for 250,000; 3 for 1,000; at least 1)."""
    return len(str(max(int(n) - 1, 0)))


_EXPORT_STATE: dict[str, Any] = {}


def _export_init(root: str) -> None:
    _EXPORT_STATE["ds"] = open_dataset(root)


def _encode_task(task: tuple[int, int, int, list[str], int]) -> int:
    from PIL import Image

    a, b, view, paths, level = task
    images = _EXPORT_STATE["ds"].read_slice(a, b).images
    for img, path in zip(images if view < 0 else images[:, view], paths, strict=True):
        Image.fromarray(img).save(path, format="PNG", compress_level=level)
    return b - a


def _box_view(
    tmp: Path, view: int, raw: np.ndarray, scene: np.ndarray, n: int, batch: int, level: int
) -> list[tuple[int, int, int, list[str], int]]:
    """3DIdentBox's folders of view ``view`` (0: m1, 1: m2); returns the PNG jobs."""
    name = f"m{view + 1}"
    img_dir, fac_dir = tmp / "samples" / name, tmp / "factors" / name
    img_dir.mkdir(parents=True)
    fac_dir.mkdir(parents=True)
    np.save(fac_dir / "raw_latents.npy", raw[:, view])
    np.save(fac_dir / "latents.npy", scene[:, view])
    digits = index_digits(n)
    return [
        (a, min(a + batch, n), view, [str(img_dir / f"{i:0{digits}d}.png")
                                      for i in range(a, min(a + batch, n))], level)
        for a in range(0, n, batch)
    ]  # fmt: skip


def export_original(
    root: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    png_compress_level: int = 1,
    batch: int = 32,
    layout: str = "auto",
) -> Path:
    """Write a dataset in the original layout at ``dst`` (see ``docs/store.md``).

    images: ``raw_latents.npy``, ``latents.npy``, ``images/<i>.png`` (``index_digits(N)``
    zero-padded). With classes: the Causal3DIdent split layout, ``raw_latents_<c>.npy``,
    ``latents_<c>.npy``, ``images_<c>/<i>.png`` (``i`` counted within class ``c``). Pairs: two
    such roots ``view0/`` and ``view1/`` (row i of each is pair i) plus ``pairs.json``. Written
    into a temporary sibling folder and renamed to ``dst`` when complete. PNGs use zlib level
    ``png_compress_level`` (default 1: what Blender's default 15% PNG compression, which made
    the original files, maps to). ``layout="3didentbox"`` writes a pairs dataset as
    3DIdentBox does: ``samples/m1|m2/<i>.png`` and ``factors/m1|m2/{raw_latents,latents}.npy``
    (``auto``: that for pairs rendered with the ``3didentbox`` preset). Returns ``dst``.
    """
    ds = open_dataset(root)
    dst = Path(dst)
    if layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    if layout == "auto":
        preset = (ds.manifest.get("config") or {}).get("preset")
        preset = preset.get("name") if isinstance(preset, dict) else preset
        layout = "3didentbox" if ds.kind == "pairs" and preset == "3didentbox" else "3dident"
    box = layout == "3didentbox"
    if box and ds.kind != "pairs":
        raise UsageError(f"{root} holds single images; the 3DIdentBox layout is for pairs.")
    if box and ds.has_class:
        raise UsageError(f"{root} has object classes, which the 3DIdentBox layout cannot hold.")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}.")
    if dst.exists():
        if not dst.is_dir():
            raise UsageError(f"{dst} exists and is not a directory.")
        entries = [e.name for e in os.scandir(dst)]
        if entries:
            if not overwrite:
                raise UsageError(
                    f"{dst} is not empty (it may hold a dataset); pass --overwrite to replace it."
                )
            foreign = [e for e in entries if not _EXPORT_NAMES.match(e)]
            if foreign:
                raise UsageError(
                    f"{dst} holds {foreign[0]!r}, which an export does not write; refusing to "
                    f"replace a folder that is not an exported dataset."
                )
    raw_all, scene_all = ds.raw_latents(), ds.scene_latents()  # every shard opens (checked)
    cls_all = ds.classes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(dst)
    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    views = [-1] if ds.kind == "images" else [0, 1]
    pool = None
    try:
        jobs: list[tuple[int, int, int, list[str], int]] = []
        for view in views:
            if box:
                jobs += _box_view(tmp, view, raw_all, scene_all, ds.n, batch, png_compress_level)
                continue
            vroot = tmp if view < 0 else tmp / f"view{view}"
            vroot.mkdir(exist_ok=True)
            raw_v = raw_all if view < 0 else raw_all[:, view]
            scene_v = scene_all if view < 0 else scene_all[:, view]
            groups = [(None, np.arange(ds.n))] if cls_all is None else [
                (int(c), np.flatnonzero(cls_all == c)) for c in np.unique(cls_all)]  # fmt: skip
            names = np.empty(ds.n, object)
            for c, idx in groups:
                suffix = "" if c is None else f"_{c}"
                img_dir = vroot / f"images{suffix}"
                img_dir.mkdir()
                np.save(vroot / f"raw_latents{suffix}.npy", raw_v[idx])
                np.save(vroot / f"latents{suffix}.npy", scene_v[idx])
                digits = index_digits(len(idx))
                for local, g in enumerate(idx):
                    names[g] = str(img_dir / f"{local:0{digits}d}.png")
            if cls_all is not None and ds.class_names:
                (vroot / CLASS_NAMES_FILE).write_text(json.dumps({
                    "format": "ident3d-export-classes", "class_names": list(ds.class_names),
                    "note": "name of class c is class_names[c]; read by ident3d convert"},
                    indent=1) + "\n")  # fmt: skip
            for a in range(0, ds.n, batch):
                b = min(a + batch, ds.n)
                jobs.append((a, b, view, list(names[a:b]), png_compress_level))
        if ds.kind == "pairs" and not box:
            (tmp / "pairs.json").write_text(json.dumps({
                "format": "ident3d-export-pairs", "n": ds.n, "views": ["view0", "view1"],
                "note": "row i of view0 and row i of view1 are positive pair i",
                "source": str(Path(root).resolve())}, indent=1) + "\n")  # fmt: skip
        if workers > 1 and len(jobs) > 1:
            pool = _worker_pool(min(workers, len(jobs)), _export_init, (str(ds.root),))
            results: Iterator[int] = pool.imap_unordered(_encode_task, jobs, chunksize=1)
        else:
            _EXPORT_STATE["ds"] = ds
            results = map(_encode_task, jobs)
        from tqdm import tqdm

        with tqdm(total=ds.n * len(views), unit="img", desc="export", disable=not progress) as bar:
            for done in results:
                bar.update(done)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException as exc:
        if pool is not None:
            pool.terminate()
            pool.join()
            pool = None
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and _is_enospc(exc):
            raise DataError(f"disk full while exporting to {dst}; nothing was kept.") from None
        raise
    finally:
        _EXPORT_STATE.pop("ds", None)
        if pool is not None:
            pool.close()
            pool.join()
    return dst
