"""Readers of the original layouts (3DIdent: ``raw_latents.npy`` + ``images/``; Causal3DIdent:
``trainset/``/``testset/`` with ``raw_latents_<c>.npy`` + ``images_<c>/`` per class):
:func:`scan_original_layout` and strict PNG decoding (:func:`decode_png`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.store.format import CAUSAL3DIDENT_CLASSES, SCENE_DIM

_PNG_RE = re.compile(r"^(\d+)\.png$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class _SourcePart:
    """One class (or the whole split) of an original-layout folder."""

    cls: int | None
    raw_path: Path
    latents_path: Path | None
    images_dir: Path
    raw: np.ndarray
    scene: np.ndarray | None
    files: list[str]  # file name of image i, i = 0 .. N-1


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path} is missing ({what}).") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array ({what}): {exc}.") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.dtype.kind not in "fiu":
        raise DataError(
            f"{path} must be a numeric (N, D) array with N >= 1, got {arr.dtype} {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise DataError(f"{path} holds NaN or inf values.")
    return arr


def _index_images(images_dir: Path, n: int, label: str) -> list[str]:
    """File names of images 0..n-1 in ``images_dir`` (any zero padding), checking the count."""
    if not images_dir.is_dir():
        raise DataError(f"{images_dir} is missing: {label} has no image folder.")
    files: dict[int, str] = {}
    for entry in os.scandir(images_dir):
        m = _PNG_RE.match(entry.name)
        if not m:
            continue
        i = int(m.group(1))
        if i in files:
            raise DataError(
                f"{images_dir} holds two files for image {i}: {files[i]} and {entry.name}."
            )
        files[i] = entry.name
    if len(files) != n or (files and (min(files) != 0 or max(files) != n - 1)):
        absent = [i for i in range(n) if i not in files][:3]
        extra = sorted(i for i in files if not 0 <= i < n)[:3]
        detail = f"missing e.g. image {absent}" if absent else f"extra indices e.g. {extra}"
        raise DataError(
            f"{images_dir} holds {len(files)} PNG images but {label} has {n} latent rows ({detail})."
        )
    return [files[i] for i in range(n)]


def _box_mapping() -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """The 3dident preset's box-mode raw->scene mapping (via :mod:`ident3d.latents`)."""
    from ident3d.latents import LatentMapping

    table: dict[str, Any] | None = None
    try:
        from ident3d.scenes import load_preset

        table = load_preset("3dident").data["latents"]["modes"]["box"]
    except Exception:  # the preset is data; fall back to the mapping's documented defaults
        table = None
    mapping = (
        LatentMapping.from_preset_mode("box", table)
        if table is not None
        else LatentMapping(mode="box", kind="box")
    )
    return mapping.to_scene, mapping.to_config()


def _scan_source(src: Path, split: str | None) -> tuple[str, Path, list[_SourcePart]]:
    """Find the layout of ``src``: ``("3dident" | "causal3dident", split dir, parts)``."""
    if not src.is_dir():
        raise DataError(f"{src} is not a directory.")
    if (src / "raw_latents.npy").exists():
        layout, base = "3dident", src
        names = [(None, "raw_latents.npy", "latents.npy", "images")]
    else:
        layout = "causal3dident"
        base = src
        if not any(_RAW_CLASS_RE.match(p.name) for p in src.iterdir()):
            splits = [s for s in ("trainset", "testset") if (src / s).is_dir()]
            if split is not None:
                want = {"train": "trainset", "test": "testset"}.get(split, split)
                if want not in ("trainset", "testset"):
                    raise UsageError(f"--split must be train or test, got {split!r}.")
                if not (src / want).is_dir():
                    raise DataError(f"{src} has no {want}/ folder.")
                base = src / want
            elif len(splits) == 1:
                base = src / splits[0]
            elif len(splits) == 2:
                raise UsageError(
                    f"{src} holds trainset/ and testset/: choose one with --split train|test."
                )
            else:
                raise DataError(
                    f"{src} is neither a 3DIdent folder (raw_latents.npy + images/) nor a "
                    f"Causal3DIdent one (trainset/, testset/ or raw_latents_<c>.npy + images_<c>/)."
                )
        classes = sorted(
            int(m.group(1)) for p in base.iterdir() if (m := _RAW_CLASS_RE.match(p.name))
        )
        if not classes:
            raise DataError(f"{base} holds no raw_latents_<c>.npy files.")
        bad = [c for c in classes if c >= len(CAUSAL3DIDENT_CLASSES)]
        if bad:
            raise DataError(f"{base} has class {bad[0]}; Causal3DIdent classes are 0..6.")
        names = [(c, f"raw_latents_{c}.npy", f"latents_{c}.npy", f"images_{c}") for c in classes]
    parts: list[_SourcePart] = []
    dim = None
    for c, raw_name, lat_name, img_name in names:
        raw = _load_npy(base / raw_name, "raw latents")
        if dim is None:
            dim = raw.shape[1]
        elif raw.shape[1] != dim:
            raise DataError(
                f"{base / raw_name} has {raw.shape[1]} columns, the other classes {dim}."
            )
        lat_path = base / lat_name
        scene = None
        if lat_path.exists():
            scene = _load_npy(lat_path, "scene latents")
            if scene.shape != (raw.shape[0], SCENE_DIM):
                raise DataError(
                    f"{lat_path} has shape {scene.shape}, but {raw_name} has {raw.shape[0]} rows "
                    f"and scene latents have {SCENE_DIM} columns."
                )
        label = raw_name
        files = _index_images(base / img_name, raw.shape[0], label)
        parts.append(_SourcePart(c, base / raw_name, lat_path if scene is not None else None,
                                 base / img_name, raw, scene, files))  # fmt: skip
    return layout, base, parts


_RAW_CLASS_RE = re.compile(r"^raw_latents_(\d+)\.npy$")


def _decode_png(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
            if head[:8] != _PNG_MAGIC:
                raise DataError(f"{path} is not a PNG file.")
            if len(head) == 26 and head[12:16] == b"IHDR" and head[24] != 8:
                raise DataError(f"{path} has {head[24]} bits per channel; expected 8-bit RGB.")
            fh.seek(0)
            with Image.open(fh) as im:
                im.load()
                mode = im.mode
                arr = np.asarray(im)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path} is not a readable PNG image ({exc}).") from None
    if mode == "RGBA":
        if not (arr[..., 3] == 255).all():
            raise DataError(f"{path} has transparent pixels; 3DIdent images are opaque RGB.")
        arr = arr[..., :3]
    elif mode != "RGB":
        raise DataError(f"{path} is a {mode} PNG; expected 8-bit RGB.")
    return np.ascontiguousarray(arr, dtype=np.uint8)


# Public names for the original-layout readers (ident3d.data reads such folders directly).
scan_original_layout = _scan_source
"""``scan_original_layout(src, split) -> (layout, split_dir, parts)``: see ``convert_original``."""
decode_png = _decode_png
"""``decode_png(path) -> uint8 (H, W, 3)``: strict 8-bit RGB PNG decoding (DataError otherwise)."""
