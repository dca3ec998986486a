"""Helpers shared by the ident3d.data tests: images, small stores and original-layout folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ident3d.store import ShardWriter, create_dataset, shard_range

H, W = 8, 6


def _images(n: int, rng: np.random.Generator, views: int = 0) -> np.ndarray:
    shape = (n, H, W, 3) if not views else (n, views, H, W, 3)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    # The first pixel encodes the sample index (and the view), so mix-ups are visible.
    if views:
        for v in range(views):
            img[:, v, 0, 0, 0] = np.arange(n) % 256
            img[:, v, 0, 0, 1] = v
    else:
        img[:, 0, 0, 0] = np.arange(n) % 256
    return img


def make_store(
    root: Path,
    n: int = 23,
    kind: str = "images",
    dim: int = 4,
    shard_size: int = 5,
    classes: np.ndarray | None = None,
    raw: np.ndarray | None = None,
    seed: int = 0,
    compression: str = "none",
) -> tuple[np.ndarray, np.ndarray]:
    """A small store dataset; returns (images, raw latents) as written."""
    rng = np.random.default_rng(seed)
    views = 2 if kind == "pairs" else 0
    images = _images(n, rng, views)
    if raw is None:
        shape = (n, dim) if kind == "images" else (n, 2, dim)
        raw = rng.uniform(-1, 1, shape).astype(np.float32)
    dim = raw.shape[-1]
    names = ["Teapot", "Hare", "Dragon"] if classes is not None else None
    manifest = create_dataset(root, kind, n, shard_size, H, W, dim, config={"test": True},
                              has_class=classes is not None, class_names=names,
                              compression=compression)  # fmt: skip
    for k in range(manifest["num_shards"]):
        start, count = shard_range(manifest, k)
        with ShardWriter(root, k, start, count, kind, H, W, dim,
                         has_class=classes is not None) as w:  # fmt: skip
            scene = np.zeros((count, 2, 10) if views else (count, 10), np.float32)
            cls = None if classes is None else classes[start : start + count]
            w.write_batch(0, images[start : start + count], raw[start : start + count], scene, cls)
    return images, raw


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(img, -1, -3)))


def make_contiguous(root: Path) -> None:
    """Rewrite every shard of the store ``root`` with its images in HDF5's contiguous layout
    (one extent instead of one chunk per sample); everything else as it was."""
    import h5py

    for path in sorted(root.glob("shard-*.h5")):
        tmp = path.with_suffix(".tmp")
        with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
            for name, d in src.items():
                if name == "images":
                    dst.create_dataset(name, data=d[()], chunks=None)
                else:
                    src.copy(d, dst, name)
            for key, value in src.attrs.items():
                dst.attrs[key] = value
        tmp.replace(path)
