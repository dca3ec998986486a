"""Export to WebDataset: :func:`export_webdataset` writes a dataset as tar shards that the
``webdataset`` library streams (one sample = consecutive files sharing a key: PNG image(s),
latents as ``.npy``, everything as ``.json``), plus a dataset card. Written with the standard
library's ``tarfile``; no extra dependency.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.store.export_card import dataset_card
from ident3d.store.export_target import plan_export, run_export_jobs
from ident3d.store.reader import open_dataset

_NAMES = re.compile(r"^(shard-\d+\.tar|README\.md)$")
_STATE: dict[str, Any] = {}


def shard_name(k: int, num: int) -> str:
    """``shard-00003.tar`` (at least 5 digits, more when there are more shards)."""
    return f"shard-{k:0{max(5, len(str(num - 1)))}d}.tar"


def sample_key(i: int, n: int) -> str:
    """The key of sample ``i``: its index, zero-padded to at least 8 digits (no dots)."""
    return f"{i:0{max(8, len(str(n - 1)))}d}"


def _init(root: str) -> None:
    _STATE["ds"] = open_dataset(root)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _png(img: np.ndarray, level: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _task(job: tuple[int, int, str, int, int]) -> int:
    a, b, path, level, mtime = job
    ds = _STATE["ds"]
    s = ds.read_slice(a, b)
    names = ds.class_names
    tmp = f"{path}.tmp"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for j, i in enumerate(range(a, b)):
            key = sample_key(i, ds.n)
            meta: dict[str, Any] = {
                "index": i,
                "raw_latents": s.raw[j].tolist(),
                "latents": s.scene[j].tolist(),
            }
            if ds.has_class:
                c = int(s.cls[j])
                meta["class"] = c
                meta["class_name"] = names[c] if names and 0 <= c < len(names) else None
            # files of one sample in a fixed order; webdataset groups consecutive ones by key
            if ds.kind == "images":
                _add(tar, f"{key}.png", _png(s.images[j], level), mtime)
            else:
                _add(tar, f"{key}.view0.png", _png(s.images[j, 0], level), mtime)
                _add(tar, f"{key}.view1.png", _png(s.images[j, 1], level), mtime)
            _add(tar, f"{key}.raw_latents.npy", _npy(s.raw[j]), mtime)
            _add(tar, f"{key}.latents.npy", _npy(s.scene[j]), mtime)
            if ds.has_class:
                _add(tar, f"{key}.cls", str(int(s.cls[j])).encode(), mtime)
            _add(tar, f"{key}.json", json.dumps(meta).encode(), mtime)
    os.replace(tmp, path)
    return b - a


def export_webdataset(
    root: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    shard_size: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    png_compress_level: int = 1,
) -> Path:
    """Write the dataset at ``root`` to ``dst`` as WebDataset tar shards (see
    ``docs/store.md``): ``dst/shard-<k>.tar`` of ``shard_size`` samples (default the store's
    shard size) and ``dst/README.md``. Per sample (key = zero-padded index): ``.png`` (pairs:
    ``.view0.png`` and ``.view1.png``), ``.raw_latents.npy``, ``.latents.npy`` (float32;
    pairs ``(2, d)``), ``.cls`` (datasets with classes) and ``.json`` (index, latents as lists,
    class and class name). Tar members carry the manifest's creation time, so an export is
    byte for byte reproducible. Written into a temporary sibling folder and renamed to ``dst``
    when complete. Returns ``dst``."""
    ds, workers, size, num, target = plan_export(root, dst, overwrite, _NAMES, workers, shard_size)
    mtime = _mtime(ds.manifest.get("created"))
    last = shard_name(num - 1, num)
    pattern = f"shard-{{{shard_name(0, num)[6:-4]}..{last[6:-4]}}}.tar"
    pairs = ds.kind == "pairs"
    image_files = (
        "`KEY.view0.png`, `KEY.view1.png` (the two views: anchor, positive)"
        if pairs
        else "`KEY.png`"
    )
    shape = " (2 x d: one row per view)" if pairs else ""
    layout = [
        f"{num} tar shards `{pattern}` of up to {size} samples, in index order. Per sample "
        f"(`KEY` = the sample index, zero-padded to {len(sample_key(0, ds.n))} digits):",
        "",
        f"- {image_files}: RGB, PNG;",
        f"- `KEY.raw_latents.npy`, `KEY.latents.npy`: float32{shape};",
    ]
    if ds.has_class:
        layout.append("- `KEY.cls`: the class label as text;")
    layout.append(
        "- `KEY.json`: `index`, `raw_latents`, `latents` (lists)"
        + (", `class`, `class_name`." if ds.has_class else ".")
    )
    img = '"view0.png", "view1.png"' if pairs else '"png"'
    usage = f"""```python
import webdataset as wds

ds = wds.WebDataset("DST/{pattern}", shardshuffle=False).decode("rgb8")
for sample in ds.to_tuple({img}, "raw_latents.npy", "json"):
    ...   # uint8 (H, W, 3) image(s), float32 raw latents, the metadata dict
```"""
    with target as tmp:
        jobs = [
            (a, min(a + size, ds.n), str(tmp / shard_name(k, num)), int(png_compress_level), mtime)
            for k, a in enumerate(range(0, ds.n, size))
        ]
        run_export_jobs(jobs, _task, _init, (str(ds.root),), workers, ds.n, progress)
        (tmp / "README.md").write_text(dataset_card(ds.manifest, "WebDataset", layout, usage))
    return Path(dst)


def _mtime(created: Any) -> int:
    import datetime as dt

    try:
        return int(dt.datetime.fromisoformat(str(created)).timestamp())
    except (TypeError, ValueError):
        return 0
