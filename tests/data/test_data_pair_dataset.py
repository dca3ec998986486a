"""Tests of ident3d.data.pair_dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from data_helpers import _chw

from ident3d import data as D
from ident3d.store import export_original


def test_pair_dataset_store_and_export(
    pairs_store: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    root, images, raw = pairs_store
    exported = export_original(root, tmp_path / "export", workers=1, progress=False)
    for path in (root, exported):
        ds = D.PairDataset(path)
        assert len(ds) == 17
        x, xt, z, zt = ds[9]
        assert torch.equal(x, _chw(images[9, 0])) and torch.equal(xt, _chw(images[9, 1]))
        assert torch.equal(z, torch.from_numpy(raw[9, 0])) and torch.equal(
            zt, torch.from_numpy(raw[9, 1])
        )
        idx = [16, 3, 4, 5]
        x, xt, z, zt = D.collate(ds.__getitems__(idx))
        assert torch.equal(x, _chw(images[idx, 0])) and torch.equal(xt, _chw(images[idx, 1]))
        assert torch.equal(z, torch.from_numpy(raw[idx, 0]))
        assert torch.equal(zt, torch.from_numpy(raw[idx, 1]))
    assert D.detect_layout(exported) == "pairs-folder"


def test_pairs_with_classes_carry_the_label_everywhere(tmp_path: Path) -> None:
    """A pairs dataset with classes (Causal3DIdent-style pairs): the class label comes fifth,
    one per pair, the same from __getitem__, __getitems__, a DataLoader and the GPU-resident
    path; the memory-mapped and the HDF5 reads agree."""
    from data_helpers import make_store

    classes = np.array([2, 0, 1, 1, 0, 2, 2, 1, 0, 1, 2], np.int64)
    root = tmp_path / "cls"
    images, raw = make_store(root, n=len(classes), kind="pairs", classes=classes, shard_size=4)
    for memory_map in (True, False):
        ds = D.PairDataset(root, memory_map=memory_map)
        _x, xt, z, _zt, c = ds[6]
        assert c == 2 and isinstance(c, int)
        assert torch.equal(xt, _chw(images[6, 1])) and torch.equal(z, torch.from_numpy(raw[6, 0]))
        idx = [10, 1, 2, 3, 7]
        x, xt, z, zt, c = D.collate(ds.__getitems__(idx))
        assert c.dtype == torch.int64 and c.tolist() == classes[idx].tolist()
        assert torch.equal(x, _chw(images[idx, 0])) and torch.equal(xt, _chw(images[idx, 1]))
        assert torch.equal(z, torch.from_numpy(raw[idx, 0]))
        assert torch.equal(zt, torch.from_numpy(raw[idx, 1]))
        loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)
        got = torch.cat([b[4] for b in loader])
        assert got.tolist() == classes.tolist()
        # a transform goes item by item and keeps the label
        t = D.PairDataset(root, transform=lambda v: v.float(), memory_map=memory_map)
        assert t[3][4] == 1 and t[3][0].dtype == torch.float32
        assert [item[4] for item in t.__getitems__([0, 5])] == [2, 2]
    g = D.GPUDataset(root, "cpu")
    _x, xt, _z, _zt, c = g.get_batch([8, 0])
    assert c.tolist() == [0, 2] and torch.equal(xt, _chw(images[[8, 0], 1]))
