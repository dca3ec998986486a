"""What the original layouts share: a part (one class, or the whole split) with its latents
and image file names, strict ``.npy`` loading, the image index check and strict 8-bit RGB PNG
decoding (:func:`decode_png`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ident3d.errors import DataError
from ident3d.store.format import SCENE_DIM

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


def _load_parts(base: Path, names: list[tuple[int | None, str, str, str]]) -> list[_SourcePart]:
    """Load each ``(class, raw latents file, scene latents file, image folder)`` of ``base``:
    the latents (all with the same raw dimension) and the file names of their images."""
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
    return parts


decode_png = _decode_png
"""``decode_png(path) -> uint8 (H, W, 3)``: strict 8-bit RGB PNG decoding (DataError otherwise)."""
