"""Tests of ident3d.data.normalize."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ident3d import data as D


def test_normalizer(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = store
    ds = D.ImageDataset(root)
    mean = images.reshape(-1, 3).mean(0) / 255
    std = images.reshape(-1, 3).std(0) / 255
    assert np.allclose(ds.mean, mean) and np.allclose(ds.std, std)
    x, _ = D.collate(ds.__getitems__([0, 1, 2]))
    y = ds.normalizer("cpu")(x)
    want = (x.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert y.dtype == torch.float32 and torch.allclose(y, want.float(), atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert abs(float(ds.normalizer()(torch.from_numpy(np.moveaxis(images, -1, 1))).mean())) < 1e-3
