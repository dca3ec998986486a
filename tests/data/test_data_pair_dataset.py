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
