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


def test_exported_class_names_reach_the_datasets(tmp_path: Path) -> None:
    # an ident3d export of a multi-class dataset writes class_names.json beside the class
    # files; loading the exported folder directly keeps those names (not Causal3DIdent's)
    import sys

    from ident3d import store

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))
    from store_helpers import _make

    root, out = tmp_path / "ds", tmp_path / "exp"
    names = ["teapot", "suzanne", "torus", "pyr"]
    _make(root, n=12, shard_size=8, has_class=True, class_names=names, cls=np.arange(12) % 4)
    store.export_original(root, out, workers=1, progress=False)
    ds = D.ImageDataset(out)
    assert ds.class_names == names
    (out / "class_names.json").unlink()
    assert D.ImageDataset(out).class_names[:2] == ["Teapot", "Hare"]
