"""Tests of ident3d.store.reader: Dataset round trips, pickling, slices, lz4."""

from __future__ import annotations

import multiprocessing as mp
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from store_helpers import H, W, _make

from ident3d import store


def test_roundtrip_images_and_stats(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _make(root)
    names = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert names == ["manifest.json", "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    ds = store.open_dataset(root)
    assert (len(ds), ds.kind, ds.height, ds.width, ds.raw_dim) == (25, "images", H, W, 10)
    for i in (0, 9, 10, 24, -1):
        s = ds.read(i)
        assert s.images.dtype == np.uint8 and s.images.shape == (H, W, 3)
        np.testing.assert_array_equal(s.images, images[i])
        np.testing.assert_array_equal(s.raw, raw[i])
        np.testing.assert_array_equal(s.scene, scene[i])
        assert s.cls is None
    b = ds.read_slice(3, 22)
    np.testing.assert_array_equal(b.images, images[3:22])
    np.testing.assert_array_equal(b.raw, raw[3:22])
    assert ds.read_slice(5, 5).images.shape == (0, H, W, 3)
    np.testing.assert_allclose(ds.mean, images.reshape(-1, 3).mean(0) / 255, rtol=1e-9)
    np.testing.assert_allclose(ds.std, images.reshape(-1, 3).std(0) / 255, rtol=1e-7)
    np.testing.assert_array_equal(ds.raw_latents(), raw)
    np.testing.assert_array_equal(ds.scene_latents(), scene)
    assert [s.count for s in ds.shards()] == [10, 10, 5]
    with pytest.raises(IndexError):
        ds.read(25)
    with pytest.raises(IndexError):
        ds.read_slice(20, 26)
    m = ds.manifest
    assert m["format_version"] == store.FORMAT_VERSION and m["config"]["seed"] == 1
    assert m["versions"]["ident3d"] and m["versions"]["hdf5"]
    with h5py.File(root / "shard-00000.h5", "r") as f:
        assert f["images"].chunks == (1, H, W, 3)
        assert f["latents_raw"].dtype == np.float32 and f["latents"].shape == (10, 10)


def _read_in_child(ds: store.Dataset, i: int, q: mp.Queue) -> None:
    q.put(ds.read(i).images.sum())


def test_dataset_pickles_and_reopens_after_fork(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, _, _ = _make(root)
    ds = store.open_dataset(root)
    ds.read(0)  # open a handle in the parent
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._open
    np.testing.assert_array_equal(clone.read(11).images, images[11])
    q: mp.Queue = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_read_in_child, args=(ds, 13, q))
    p.start()
    p.join(30)
    assert p.exitcode == 0 and q.get(timeout=5) == images[13].sum()
    ds.close()


def test_read_slice_into_buffer(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, _, _ = _make(root, n=25, shard_size=10, compression="gzip")
    ds = store.open_dataset(root)
    buf = np.zeros((12, H, W, 3), np.uint8)
    got = ds.read_slice(8, 20, out=buf)
    assert got.images is buf
    np.testing.assert_array_equal(buf, images[8:20])
    with pytest.raises(ValueError, match="C-contiguous"):
        ds.read_slice(8, 19, out=buf)
    one = np.zeros((H, W, 3), np.uint8)
    ds.read_into(21, one)
    np.testing.assert_array_equal(one, images[21])
    root2 = tmp_path / "uncompressed"  # the direct-chunk path
    imgs2, _, _ = _make(root2, n=5, shard_size=5, compression="none")
    ds2 = store.open_dataset(root2)
    ds2.read_into(3, one)
    np.testing.assert_array_equal(one, imgs2[3])
    with pytest.raises(ValueError):
        ds2.read_into(3, np.zeros((H, W, 3), np.float32))


def test_lz4_readable_in_a_fresh_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "ds"
    images, _, _ = _make(root, n=12, shard_size=5, compression="lz4")
    np.save(tmp_path / "expected.npy", images[7])
    code = (
        "import sys, numpy as np; from ident3d import store; "
        f"ds = store.open_dataset({str(root)!r}); "
        f"assert (ds.read(7).images == np.load({str(tmp_path / 'expected.npy')!r})).all(); "
        f"assert store.verify_dataset({str(root)!r}).ok"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    "edit",
    [{"height": H + 1}, {"width": W - 2}, {"kind": "pairs"}, {"raw_dim": 11}],
    ids=["height", "width", "kind", "raw_dim"],
)
def test_edited_manifest_is_a_data_error_naming_the_shard(tmp_path: Path, edit: dict) -> None:
    """A manifest whose shapes no longer match its shards (edited height, kind or dims) is a
    DataError naming the shard file, from the store and from the torch datasets, not h5py's
    'out buffer is only N bytes' ValueError."""
    import json

    from ident3d.data import ImageDataset
    from ident3d.errors import DataError

    root = tmp_path / "ds"
    _make(root, n=12, shard_size=6)
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(edit)
    path.write_text(json.dumps(manifest))
    ds = store.open_dataset(root)
    with pytest.raises(DataError, match=r"shard-00000\.h5 holds .* manifest implies"):
        ds.read(0)
    if edit.get("kind") != "pairs":
        with pytest.raises(DataError, match=r"shard-00000\.h5"):
            ImageDataset(root)[0]
