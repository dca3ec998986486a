"""Export to Hugging Face datasets: :func:`export_hf` writes a dataset as Parquet shards that
``datasets.load_dataset("parquet", data_files=...)`` reads with image columns (PNG bytes in
the ``Image`` feature's ``{bytes, path}`` layout), the latents, classes (``ClassLabel``) and
pair structure, plus a dataset card. Needs ``pyarrow`` (``pip install 'ident3d[hf]'``);
``datasets`` itself is only needed to read the result.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.store.export_card import dataset_card
from ident3d.store.export_target import plan_export, run_export_jobs
from ident3d.store.reader import open_dataset

DATA_DIR = "data"
ROW_GROUP = 100  # rows per Parquet row group: what the datasets viewer reads at a time
_NAMES = re.compile(r"^(data|README\.md)$")
_STATE: dict[str, Any] = {}


def _pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet
    except ImportError:
        raise UsageError(
            "--format hf needs pyarrow: pip install 'ident3d[hf]' (or pip install pyarrow)"
        ) from None
    return pa


def shard_name(k: int, num: int) -> str:
    """``data/shard-00003-of-00010.parquet``: the Hub's ``<name>-<k>-of-<n>`` convention."""
    d = max(5, len(str(num)))
    return f"{DATA_DIR}/shard-{k:0{d}d}-of-{num:0{d}d}.parquet"


def columns(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``datasets`` features of an export (JSON, as ``Features.to_dict()`` writes them):
    ``index``; ``image`` (pairs: ``image_0``, ``image_1``); ``raw_latents`` and ``latents``
    (pairs: ``_0`` / ``_1`` per view) as fixed-length float32 sequences; ``class``
    (``ClassLabel``, or int64 when the manifest names no classes) for datasets with classes."""
    views = [""] if manifest["kind"] == "images" else ["_0", "_1"]
    feats: dict[str, Any] = {"index": {"dtype": "int64", "_type": "Value"}}
    for v in views:
        feats[f"image{v}"] = {"_type": "Image"}
    for v in views:
        for name, dim in (("raw_latents", int(manifest["raw_dim"])), ("latents", 10)):
            feats[f"{name}{v}"] = {
                "feature": {"dtype": "float32", "_type": "Value"},
                "length": dim,
                "_type": "Sequence",
            }
    if manifest.get("has_class"):
        names = manifest.get("class_names")
        feats["class"] = (
            {"names": list(names), "_type": "ClassLabel"}
            if names
            else {"dtype": "int64", "_type": "Value"}  # labels without names stay integers
        )
    return feats


def _schema(manifest: dict[str, Any]) -> Any:
    pa = _pyarrow()
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = []
    for name, f in columns(manifest).items():
        if f["_type"] == "Image":
            fields.append(pa.field(name, image))
        elif f["_type"] == "Sequence":
            fields.append(pa.field(name, pa.list_(pa.float32(), f["length"])))
        else:
            fields.append(pa.field(name, pa.int64()))
    meta = {"huggingface": json.dumps({"info": {"features": columns(manifest)}})}
    return pa.schema(fields, metadata=meta)


def _init(root: str) -> None:
    _STATE["ds"] = open_dataset(root)


def _png(img: np.ndarray, level: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def _task(job: tuple[int, int, str, int]) -> int:
    import pyarrow.parquet as pq

    a, b, path, level = job
    ds = _STATE["ds"]
    pa = _pyarrow()
    schema = _schema(ds.manifest)
    s = ds.read_slice(a, b)
    data: dict[str, Any] = {"index": np.arange(a, b, dtype=np.int64)}
    views = [(None, "")] if ds.kind == "images" else [(0, "_0"), (1, "_1")]
    for v, suffix in views:
        imgs = s.images if v is None else s.images[:, v]
        data[f"image{suffix}"] = [{"bytes": _png(im, level), "path": None} for im in imgs]
    for v, suffix in views:
        for name, arr in (("raw_latents", s.raw), ("latents", s.scene)):
            col = arr if v is None else arr[:, v]
            flat = pa.array(np.ascontiguousarray(col, np.float32).reshape(-1))
            data[f"{name}{suffix}"] = pa.FixedSizeListArray.from_arrays(flat, col.shape[-1])
    if ds.has_class:
        data["class"] = np.asarray(s.cls, np.int64)
    table = pa.table(data, schema=schema)
    tmp = f"{path}.tmp"
    pq.write_table(table, tmp, row_group_size=ROW_GROUP, compression="zstd")
    os.replace(tmp, path)
    return b - a


def _usage(manifest: dict[str, Any]) -> str:
    img = "image" if manifest["kind"] == "images" else "image_0"
    return f"""```python
from datasets import load_dataset

ds = load_dataset("parquet", data_files="DST/{DATA_DIR}/*.parquet", split="train")
row = ds[0]
row["{img}"]          # PIL image (decode=False on the column gives the PNG bytes)
row["raw_latents{"" if manifest["kind"] == "images" else "_0"}"]    # ground-truth factors
ds = ds.with_format("torch")   # or "numpy"
```

`load_dataset("DST")` reads the same files (the `configs` entry above); `train` is the
`datasets` name of a single split, whatever split this dataset was made for."""


def export_hf(
    root: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    shard_size: int | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    png_compress_level: int = 1,
) -> Path:
    """Write the dataset at ``root`` to ``dst`` as Hugging Face Parquet shards (see
    ``docs/store.md``): ``dst/data/shard-<k>-of-<n>.parquet`` (``shard_size`` rows each,
    default the store's shard size; row groups of 100), columns :func:`columns`, and
    ``dst/README.md``, the dataset card. Written into a temporary sibling folder and renamed to
    ``dst`` when complete. Returns ``dst``."""
    _pyarrow()
    ds, workers, size, num, target = plan_export(root, dst, overwrite, _NAMES, workers, shard_size)
    feats = columns(ds.manifest)
    front = "\n".join(
        [
            "configs:",
            "- config_name: default",
            "  data_files:",
            "  - split: train",
            f"    path: {DATA_DIR}/*.parquet",
            "tags:",
            "- ident3d",
            "- identifiability",
            "- 3dident",
        ]
    )
    layout = [
        f"`{DATA_DIR}/shard-<k>-of-<n>.parquet`: {num} Parquet files of up to {size} rows "
        f"(row groups of {ROW_GROUP}), row i = sample i. Columns:",
        "",
        "| column | type | what |",
        "|---|---|---|",
    ]
    what = {
        "index": "the sample's index in the source dataset",
        "class": "class label (`ClassLabel`, names in the feature)",
    }
    for name, f in feats.items():
        typ = f["_type"] if f["_type"] != "Sequence" else f"float32 x {f['length']}"
        if name.startswith("image"):
            desc = "RGB image, PNG bytes (`Image` feature: `{bytes, path}`)"
        elif name.startswith("raw_latents"):
            desc = "raw latents (what the data were generated from)"
        elif name.startswith("latents"):
            desc = "the 10 factors in scene units"
        else:
            desc = what.get(name, "")
        if name.endswith("_0"):
            desc += ", view 0 (anchor)"
        elif name.endswith("_1"):
            desc += ", view 1 (positive)"
        layout.append(f"| `{name}` | {typ} | {desc} |")
    with target as tmp:
        (tmp / DATA_DIR).mkdir()
        jobs = [
            (a, min(a + size, ds.n), str(tmp / shard_name(k, num)), int(png_compress_level))
            for k, a in enumerate(range(0, ds.n, size))
        ]
        run_export_jobs(jobs, _task, _init, (str(ds.root),), workers, ds.n, progress)
        card = dataset_card(ds.manifest, "Hugging Face Parquet", layout, _usage(ds.manifest), front)
        (tmp / "README.md").write_text(card)
    return Path(dst)
