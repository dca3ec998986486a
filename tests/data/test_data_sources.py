"""Tests of ident3d.data.sources: layouts and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ident3d import data as D
from ident3d.errors import DataError, UsageError


def test_bad_input(
    store: tuple[Path, np.ndarray, np.ndarray],
    pairs_store: tuple[Path, np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    root, _, _ = store
    proot, _, _ = pairs_store
    with pytest.raises(DataError, match="does not exist"):
        D.ImageDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a dataset"):
        D.ImageDataset(tmp_path / "empty")
    with pytest.raises(UsageError, match="single images"):
        D.PairDataset(root)
    with pytest.raises(UsageError, match="PairDataset"):
        D.KNNPairDataset(proot)
    with pytest.raises(UsageError, match="holds pairs"):
        D.ImageDataset(proot)
    with pytest.raises(UsageError, match="conditional"):
        D.KNNPairDataset(root, conditional="bogus")
    with pytest.raises(UsageError, match="anchor"):
        D.KNNPairDataset(root, anchor="nearest")
    with pytest.raises(UsageError, match="batch_size"):
        D.make_loader(D.ImageDataset(root), 0)
    with pytest.raises(UsageError):
        D.GPUDataset(root, "cpu", mode="pairs")
