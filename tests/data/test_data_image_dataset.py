"""Tests of ident3d.data.image_dataset: items match what was stored, in every layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import H, W, _chw, _images
from PIL import Image

from ident3d import data as D
from ident3d.errors import UsageError


def make_folder(root: Path, images: np.ndarray, raw: np.ndarray, suffix: str = "") -> None:
    """An original 3DIdent layout (zero padding ceil(log10 N), as the original loader)."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"raw_latents{suffix}.npy", raw)
    img_dir = root / f"images{suffix}"
    img_dir.mkdir()
    digits = int(np.ceil(np.log10(len(raw))))
    for i, img in enumerate(images):
        Image.fromarray(img).save(img_dir / f"{str(i).zfill(digits)}.png")


def test_image_dataset_store_items_match(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, raw = store
    ds = D.ImageDataset(root)
    assert len(ds) == len(raw) and ds.layout == "store"
    for i in (0, 4, 5, 22, -1):
        x, z = ds[i]
        assert x.dtype == torch.uint8 and x.shape == (3, H, W)
        assert torch.equal(x, _chw(images[i]))
        assert z.dtype == torch.float32 and torch.equal(z, torch.from_numpy(raw[i]))
    # A batch: runs across shard boundaries, repeats, any order.
    idx = [3, 4, 5, 6, 0, 22, 22, 11]
    x, z = D.collate(ds.__getitems__(idx))
    assert x.shape == (len(idx), 3, H, W)
    assert torch.equal(x, _chw(images[idx]))
    assert torch.equal(z, torch.from_numpy(raw[idx]))
    # torch's default_collate on the same items gives the same batch.
    x2, z2 = torch.utils.data.default_collate(ds.__getitems__(idx))
    assert torch.equal(x2, x) and torch.equal(z2, z)
    assert "Number of datapoints: 23" in repr(ds)
    with pytest.raises(IndexError):
        ds[23]


def test_image_dataset_transforms(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, raw = store
    ds = D.ImageDataset(root, transform=lambda x: x.float() / 255, target_transform=lambda z: -z)
    x, z = ds[2]
    assert torch.allclose(x, _chw(images[2]).float() / 255)
    assert torch.equal(z, -torch.from_numpy(raw[2]))
    xb, _zb = D.collate(ds.__getitems__([2, 3]))
    assert torch.allclose(xb[1], _chw(images[3]).float() / 255)
    assert "Transform" in repr(ds)


def test_image_dataset_original_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images, raw = _images(12, rng), rng.uniform(-1, 1, (12, 10)).astype(np.float32)
    make_folder(tmp_path / "orig", images, raw)
    assert (tmp_path / "orig" / "images" / "00.png").exists()
    ds = D.ImageDataset(tmp_path / "orig")
    assert ds.layout == "3dident" and len(ds) == 12
    for i in range(12):
        x, z = ds[i]
        assert torch.equal(x, _chw(images[i])) and torch.equal(z, torch.from_numpy(raw[i]))
    x, z = D.collate(ds.__getitems__([5, 1]))
    assert torch.equal(x, _chw(images[[5, 1]]))
    mean = images.reshape(-1, 3).mean(0) / 255
    assert np.allclose(ds.mean, mean)


def test_causal3dident_layout_has_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    split = tmp_path / "c3d" / "trainset"
    parts = []
    for c, n in ((0, 4), (1, 7)):
        images, raw = _images(n, rng), rng.uniform(-1, 1, (n, 10)).astype(np.float32)
        make_folder(split, images, raw, suffix=f"_{c}")
        parts.append((c, images, raw))
    with pytest.raises(UsageError, match="trainset"):
        D.ImageDataset(tmp_path / "c3d")
    ds = D.ImageDataset(split)
    assert ds.layout == "causal3dident" and len(ds) == 11 and ds.class_names[1] == "Hare"
    x, z, c = ds[6]  # class 1, local index 2
    assert c == 1 and torch.equal(x, _chw(parts[1][1][2]))
    assert torch.equal(z, torch.from_numpy(parts[1][2][2]))
    xb, _zb, cb = D.collate(ds.__getitems__([0, 6]))
    assert cb.tolist() == [0, 1] and torch.equal(xb[1], x)
