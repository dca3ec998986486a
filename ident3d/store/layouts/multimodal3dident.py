"""The Multimodal3DIdent folder layout: export to it and convert from it.

One split folder (the original dataset has ``train/``, ``val/`` and ``test/``) holds, as the
generator writes them (Multimodal3DIdent ``generate_latents.py`` lines 154-156,
``generate_text.py`` 46-75, ``generate_images.py`` 115-117) and its loader reads them
(multimodal-contrastive-learning ``datasets.py`` lines 90-127)::

    SPLIT/images/<i>.png         i zero-padded to ceil(log10(N)) digits
    SPLIT/text/text_raw.txt      caption i on line i (no newline after the last)
    SPLIT/latents_image.csv      IMAGE_COLUMNS, one row per sample (pandas' to_csv layout)
    SPLIT/latents_text.csv       TEXT_COLUMNS

Integers are written as integers and the other numbers as Python's shortest round-trip
decimal, as ``pandas.DataFrame.to_csv`` writes the generator's arrays (``object_zpos`` is the
float column ``0.0``). ident3d stores latents as float32, so an exported continuous latent is
the float32 value of the original (relative error < 6e-8).
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.latents.multimodal import (
    IMAGE_COLUMNS,
    TEXT_COLUMNS,
    TEXT_INT_COLUMNS,
    MultimodalSpec,
    multimodal_scene_latents,
)
from ident3d.store.export import index_digits
from ident3d.store.layouts.common import _decode_png
from ident3d.store.multimodal import (
    MODALITY,
    MultimodalShardWriter,
    read_text,
    require_multimodal,
)
from ident3d.store.reader import open_dataset

SPLITS = ("train", "val", "test")
IMAGE_CSV, TEXT_CSV = "latents_image.csv", "latents_text.csv"
TEXT_FILE = Path("text") / "text_raw.txt"
#: Columns written as integers (the generator's ``np.random.randint`` columns).
_INT_IMAGE = {"object_shape", "object_xpos", "object_ypos"}
_TEXT_INT = {"object_shape", "object_xpos", "object_ypos", "object_color_index", "text_phrasing"}


def is_multimodal_split(path: Path) -> bool:
    return (path / IMAGE_CSV).is_file() and (path / TEXT_CSV).is_file()


def _num(v: float, integer: bool) -> str:
    return str(round(float(v))) if integer else repr(float(v))


def _csv_text(header: tuple[str, ...], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def export_multimodal(
    root: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    split: str = "train",
    overwrite: bool = False,
    png_compress_level: int = 1,
) -> Path:
    """Write the image/text dataset ``root`` as split folder ``dst/<split>``; returns it."""
    from PIL import Image

    require_multimodal(root)
    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)} for Multimodal3DIdent.")
    ds = open_dataset(root)
    text = read_text(root)
    raw = ds.raw_latents().astype(np.float64)
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"{dst} exists and is not a directory.")
    out = dst / split
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; pass --overwrite to replace it.")
    if out.exists() and not is_multimodal_split(out):
        raise UsageError(f"{out} is not a Multimodal3DIdent split folder; refusing to replace it.")
    dst.mkdir(parents=True, exist_ok=True)
    tmp = dst / f".{split}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        (tmp / "images").mkdir()
        (tmp / "text").mkdir()
        digits = index_digits(ds.n) if ds.n > 1 else 0
        for a in range(0, ds.n, 64):
            b = min(ds.n, a + 64)
            for j, img in enumerate(ds.read_slice(a, b).images):
                name = str(a + j).zfill(digits) + ".png"
                Image.fromarray(img).save(
                    tmp / "images" / name, format="PNG", compress_level=png_compress_level
                )
        (tmp / TEXT_FILE).write_text("\n".join(text.captions), encoding="utf-8")
        img_rows = [
            [_num(raw[i, c], col in _INT_IMAGE) for c, col in enumerate(IMAGE_COLUMNS)]
            for i in range(ds.n)
        ]
        (tmp / IMAGE_CSV).write_text(_csv_text(IMAGE_COLUMNS, img_rows), encoding="utf-8")
        t = {c: text.column(c) for c in TEXT_INT_COLUMNS}
        txt_rows = [
            [
                str(int(t["object_shape"][i])), str(int(t["object_xpos"][i])),
                str(int(t["object_ypos"][i])), repr(float(raw[i, 3])), text.color_names[i],
                str(int(t["object_color_index"][i])), str(int(t["text_phrasing"][i])),
            ]
            for i in range(ds.n)
        ]  # fmt: skip
        (tmp / TEXT_CSV).write_text(_csv_text(TEXT_COLUMNS, txt_rows), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ------------------------------------------------------------------------------ convert


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
            header = tuple(rows[0].keys()) if rows else ()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {path}: {exc}.") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path} lacks the column {missing[0]!r} (or holds no rows).")
    return rows


def _palette_of(name: str, palettes: tuple[str, ...]) -> int:
    """The palette a colour name comes from (the three palettes' names are disjoint)."""
    kind = "tableau" if name.startswith("tab:") else "xkcd" if name.startswith("xkcd:") else "css4"
    return palettes.index(kind) if kind in palettes else -1


def read_multimodal_split(src: Path) -> dict[str, Any]:
    """Latents, captions and image paths of a Multimodal3DIdent split folder."""
    if not is_multimodal_split(src):
        raise DataError(f"{src} is not a Multimodal3DIdent split ({IMAGE_CSV}, {TEXT_CSV}).")
    img_rows = _read_csv(src / IMAGE_CSV, IMAGE_COLUMNS)
    txt_rows = _read_csv(src / TEXT_CSV, TEXT_COLUMNS)
    try:
        captions = (src / TEXT_FILE).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {src / TEXT_FILE}: {exc}.") from None
    n = len(img_rows)
    if not (n == len(txt_rows) == len(captions)):
        raise DataError(
            f"{src}: {n} image latents, {len(txt_rows)} text latents and {len(captions)} "
            "captions; they must be index-aligned."
        )
    try:
        image = np.array([[float(r[c]) for c in IMAGE_COLUMNS] for r in img_rows], np.float64)
        tint = np.array(
            [[int(float(r[c])) for c in TEXT_COLUMNS if c != "object_color_name"]
             for r in txt_rows], np.int64)  # fmt: skip
    except ValueError as exc:
        raise DataError(f"{src}: a latent is not a number ({exc}).") from None
    if not np.isfinite(image).all():
        raise DataError(f"{src}/{IMAGE_CSV} holds NaN or infinite values.")
    digits = index_digits(n) if n > 1 else 0
    paths = [src / "images" / (str(i).zfill(digits) + ".png") for i in range(n)]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise DataError(f"{src}: image {absent[0].name} is missing ({len(absent)} missing).")
    return {
        "image": image,
        "text_int": tint,  # shape, x, y, z, color index, phrasing
        "color_names": [r["object_color_name"] for r in txt_rows],
        "captions": captions,
        "paths": paths,
    }


def convert_multimodal(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    compression: str | None = None,
    shard_size: int = 1000,
    preset: str = "multimodal3dident",
) -> Path:
    """Pack a Multimodal3DIdent split folder ``src`` into an image/text dataset at ``dst``."""
    from ident3d import store
    from ident3d.latents import factor_table
    from ident3d.scenes import load_preset

    src, dst = Path(src), Path(dst)
    d = read_multimodal_split(src)
    p = load_preset(preset)
    spec = MultimodalSpec.from_preset(p.data, p.path)
    n = len(d["captions"])
    first = _decode_png(str(d["paths"][0]))
    h, w = first.shape[:2]
    if h != w:
        raise DataError(f"{d['paths'][0]} is {w}x{h}; expected square images.")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise UsageError(f"{dst} is not empty; choose a new folder or pass --overwrite.")
    if overwrite and dst.exists():
        if not (dst / store.MANIFEST_NAME).exists():
            raise UsageError(f"{dst} is not an ident3d dataset; refusing to replace it.")
        shutil.rmtree(dst)
    scene = multimodal_scene_latents(spec, d["image"])
    palettes = np.array([_palette_of(nm, spec.palettes) for nm in d["color_names"]], np.int64)
    text_lat = np.column_stack([d["text_int"], palettes])
    shapes = d["image"][:, 0].astype(np.int64)
    cfg = {
        "origin": "converted",
        "modality": MODALITY,
        "layout": "multimodal3dident",
        "source": str(src.resolve()),
        "preset": p.to_config(),
        "multimodal": {"image_columns": list(IMAGE_COLUMNS), "text_columns": list(TEXT_INT_COLUMNS),
                       "csv_text_columns": list(TEXT_COLUMNS)},
    }  # fmt: skip
    created = not dst.exists()
    manifest = store.create_dataset(
        dst, kind="images", n=n, shard_size=shard_size, height=h, width=w,
        raw_dim=len(IMAGE_COLUMNS), config=cfg, factor_table=factor_table(),
        compression=compression or store.DEFAULT_COMPRESSION, has_class=True,
        class_names=list(spec.shape_names),
    )  # fmt: skip
    try:
        for k in range(manifest["num_shards"]):
            start, count = store.shard_range(manifest, k)
            with MultimodalShardWriter(dst, k, start, count, "images", h, w, len(IMAGE_COLUMNS),
                                       has_class=True) as wr:  # fmt: skip
                for j in range(count):
                    i = start + j
                    img = first if i == 0 else _decode_png(str(d["paths"][i]))
                    if img.shape != first.shape:
                        raise DataError(f"{d['paths'][i]} is {img.shape}, not {first.shape}.")
                    wr.write(j, img, d["image"][i], scene[i], int(shapes[i]))
                wr.write_text(0, d["captions"][start : start + count],
                              d["color_names"][start : start + count],
                              text_lat[start : start + count])  # fmt: skip
    except BaseException:
        if created:
            shutil.rmtree(dst, ignore_errors=True)
        raise
    return dst


def find_multimodal_split(src: str | os.PathLike[str], split: str | None) -> Path | None:
    """The Multimodal3DIdent split folder ``src`` means (``src`` itself, or ``src/<split>``),
    or None when ``src`` is not such a folder."""
    src = Path(src)
    if is_multimodal_split(src):
        return src
    if any(is_multimodal_split(src / s) for s in SPLITS):
        if split is None:
            raise UsageError(f"{src} holds Multimodal3DIdent splits; choose one with --split.")
        if not is_multimodal_split(src / split):
            raise UsageError(f"{src} has no Multimodal3DIdent split {split}/.")
        return src / split
    return None
