"""Tests of ident3d.store.export_hf (ident3d export --format hf): Hugging Face ``datasets``
reads the Parquet shards back exactly (images pixel for pixel, latents bit for bit, classes,
pairs), the card, and bad input."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
from store_helpers import _cli, _make

from ident3d import store
from ident3d.latents import factor_table

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def _load(dst: Path, cache: Path):
    files = sorted(glob.glob(str(dst / "data" / "*.parquet")))
    return datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(cache))


def test_images_with_classes_read_back_exactly(tmp_path, capsys):
    root = tmp_path / "ds"
    names = ["cube", "ball", "pyr"]
    cls = np.array([i % 3 for i in range(23)])
    images, raw, scene = _make(
        root, n=23, shard_size=10, has_class=True, class_names=names, cls=cls,
        factor_table=factor_table(),
    )  # fmt: skip
    dst = tmp_path / "hf"
    code, out, err = _cli(["export", str(root), str(dst), "--format", "hf", "--shard-size", "7",
                           "-j", "2", "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    assert "(hf)" in out
    files = sorted(p.name for p in (dst / "data").iterdir())
    assert files == [f"shard-0000{k}-of-00004.parquet" for k in range(4)]
    ds = _load(dst, tmp_path / "cache")
    assert len(ds) == 23
    f = ds.features
    assert isinstance(f["image"], datasets.Image)
    assert isinstance(f["class"], datasets.ClassLabel) and f["class"].names == names
    for i in range(23):
        row = ds[i]
        assert row["index"] == i
        assert np.array_equal(np.asarray(row["image"]), images[i])
        assert np.array_equal(np.asarray(row["raw_latents"], np.float32), raw[i])
        assert np.array_equal(np.asarray(row["latents"], np.float32), scene[i])
        assert row["class"] == cls[i]
    # the PNG bytes themselves, as the Image feature stores them
    raw_rows = ds.cast_column("image", datasets.Image(decode=False))
    assert raw_rows[0]["image"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    # numpy format: the latent columns as arrays
    arr = ds.with_format("numpy")[:]
    np.testing.assert_array_equal(arr["raw_latents"], raw)
    card = (dst / "README.md").read_text()
    assert "path: data/*.parquet" in card and "| 9 | `hue_background` |" in card
    assert "0 = cube, 1 = ball, 2 = pyr" in card
    # the folder itself loads too (the card's configs entry)
    again = datasets.load_dataset(str(dst), split="train", cache_dir=str(tmp_path / "c2"))
    assert np.array_equal(np.asarray(again[22]["image"]), images[22])


def test_pairs_read_back_exactly(tmp_path):
    root = tmp_path / "pairs"
    images, raw, scene = _make(root, n=9, shard_size=4, kind="pairs")
    dst = store.export_hf(root, tmp_path / "hf", workers=1, progress=False)
    ds = _load(dst, tmp_path / "cache")
    assert set(ds.column_names) == {
        "index", "image_0", "image_1", "raw_latents_0", "raw_latents_1", "latents_0", "latents_1"
    }  # fmt: skip
    for i in range(9):
        row = ds[i]
        for v in (0, 1):
            assert np.array_equal(np.asarray(row[f"image_{v}"]), images[i, v])
            assert np.array_equal(np.asarray(row[f"raw_latents_{v}"], np.float32), raw[i, v])
            assert np.array_equal(np.asarray(row[f"latents_{v}"], np.float32), scene[i, v])
    assert len(list((dst / "data").iterdir())) == 3  # the store's shard size by default
    assert "view 1 (positive)" in (dst / "README.md").read_text()


def test_refusals_and_overwrite(tmp_path, capsys):
    root = tmp_path / "ds"
    _make(root, n=5, shard_size=5)
    dst = tmp_path / "hf"
    assert _cli(["export", str(root), str(dst), "--format", "hf", "-j", "1"], capsys)[0] == 0
    code, _, err = _cli(["export", str(root), str(dst), "--format", "hf", "-j", "1"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        f"error: {dst} is not empty (it may hold a dataset); pass --overwrite to replace it."
    ]
    args = ["export", str(root), str(dst), "--format", "hf", "-j", "1", "--overwrite"]
    assert _cli(args, capsys)[0] == 0  # an earlier export is replaced
    (dst / "notes.txt").write_text("mine")
    code, _, err = _cli(args, capsys)
    assert code == 2 and "holds 'notes.txt'" in err and len(err.strip().splitlines()) == 1
    assert (dst / "notes.txt").read_text() == "mine"
    code, _, err = _cli(["export", str(root), str(tmp_path / "o"), "--shard-size", "3"], capsys)
    assert code == 2 and "--shard-size goes with --format hf or webdataset" in err
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_missing_pyarrow_is_one_line(tmp_path, capsys, monkeypatch):
    import builtins

    root = tmp_path / "ds"
    _make(root, n=3, shard_size=3)
    real = builtins.__import__

    def no_pyarrow(name, *a, **kw):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    code, _, err = _cli(["export", str(root), str(tmp_path / "hf"), "--format", "hf"], capsys)
    assert code == 2
    assert err.strip() == (
        "error: --format hf needs pyarrow: pip install 'ident3d[hf]' (or pip install pyarrow)"
    )
    assert not (tmp_path / "hf").exists()
