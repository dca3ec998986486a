"""Tests of ident3d.data.resident: the GPU-resident path (on the CPU and on CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import _chw

from ident3d import data as D


def test_gpu_dataset_on_cpu(
    store: tuple[Path, np.ndarray, np.ndarray], pairs_store: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    root, images, raw = store
    g = D.load_to_device(root, "cpu", chunk=7)
    x, z = g.get_batch([22, 0, 5])
    assert torch.equal(x, _chw(images[[22, 0, 5]])) and torch.equal(
        z, torch.from_numpy(raw[[22, 0, 5]])
    )
    seen = torch.cat([b[1] for b in g.batches(4, shuffle=True, epoch=1)])
    assert sorted(seen[:, 0].tolist()) == sorted(raw[:, 0].tolist())
    proot, pimages, praw = pairs_store
    gp = D.GPUDataset(proot, "cpu")
    x, xt, z, zt = gp.get_batch([1, 16])
    assert torch.equal(xt, _chw(pimages[[1, 16], 1])) and torch.equal(
        zt, torch.from_numpy(praw[[1, 16], 1])
    )
    # kNN on the device path: the same pairs as KNNPairDataset with the same seed and epoch.
    gk = D.GPUDataset(root, "cpu", mode="knn", sigma=0.2, seed=4)
    ref = D.KNNPairDataset(root, sigma=0.2, seed=4).lookup([(3, i) for i in range(len(raw))])
    x, xt, z, zt, info = gk.get_batch(list(range(len(raw))), epoch=3, return_info=True)
    assert np.array_equal(info["index"].numpy(), ref["index"])
    assert np.array_equal(info["index_tilde"].numpy(), ref["index_tilde"])
    assert torch.equal(x, _chw(images[ref["index"]]))
    assert "GPUDataset" in repr(gk)


@pytest.mark.gpu
def test_gpu_dataset_cuda(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = store
    g = D.load_to_device(root, "cuda", mode="knn", sigma=0.2, seed=4)
    ref = D.KNNPairDataset(root, sigma=0.2, seed=4).lookup([(0, i) for i in range(len(images))])
    x, _xt, _z, _zt, info = g.get_batch(list(range(len(images))), return_info=True)
    assert x.is_cuda and np.array_equal(info["index_tilde"].cpu().numpy(), ref["index_tilde"])
    assert g.normalizer()(x).is_cuda
