"""Helpers shared by the convert and export tests: original-layout folders and PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ident3d import store

H, W = 14, 11


def _image(rng: np.random.Generator) -> np.ndarray:
    """A smooth-ish random RGB image (gradient + noise), like a small render."""
    y, x = np.mgrid[0:H, 0:W]
    base = rng.uniform(0, 255, 3) + rng.uniform(-8, 8, 3) * (x[..., None] + y[..., None])
    return np.clip(base + rng.normal(0, 20, (H, W, 3)), 0, 255).astype(np.uint8)


def make_original(
    root: Path, n: int, seed: int = 0, latents: bool = True, digits: int | None = None
):
    """An original-layout 3DIdent folder: raw_latents.npy, latents.npy, images/<i>.png."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    raw = rng.uniform(-1, 1, (n, 10))
    np.save(root / "raw_latents.npy", raw)
    scene = None
    if latents:
        scene = rng.normal(size=(n, 10))
        np.save(root / "latents.npy", scene)
    d = store.index_digits(n) if digits is None else digits
    images = np.stack([_image(rng) for _ in range(n)])
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / "images" / f"{i:0{d}d}.png")
    return raw, scene, images


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)
