"""Tests of ident3d.store.writer: ShardWriter (pairs, classes, failures, full disks)."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest
from store_helpers import H, W, _data

from ident3d import store
from ident3d.errors import DataError, UsageError


def test_pairs_write_batch_and_classes(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    n = 17
    images, raw, scene = _data(n, "pairs", raw_dim=11)
    cls = np.arange(n) % 3
    m = store.create_dataset(
        root, "pairs", n, 8, H, W, 11, {}, compression="lz4", has_class=True,
        class_names=["a", "b", "c"],
    )  # fmt: skip
    for k in range(m["num_shards"]):
        a, c = store.shard_range(m, k)
        with store.ShardWriter(root, k, a, c, "pairs", H, W, 11, has_class=True) as w:
            w.write_batch(0, images[a : a + c], raw[a : a + c], scene[a : a + c], cls[a : a + c])
    ds = store.open_dataset(root)
    assert ds.kind == "pairs" and ds.class_names == ["a", "b", "c"]
    s = ds.read(16)
    assert s.images.shape == (2, H, W, 3) and s.raw.shape == (2, 11) and s.cls == 16 % 3
    np.testing.assert_array_equal(ds.read_slice(0, n).images, images)
    np.testing.assert_array_equal(ds.classes(), cls)
    assert store.verify_dataset(root).ok


def test_writer_exception_and_incomplete_shard_leave_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _data(10)
    store.create_dataset(root, "images", 10, 5, H, W, 10, {})

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), store.ShardWriter(root, 0, 0, 5, "images", H, W, 10) as w:
        w.write(0, images[0], raw[0], scene[0])
        assert any(".tmp-" in p.name for p in root.iterdir())
        raise Boom
    with (
        pytest.raises(ValueError, match="unwritten"),
        store.ShardWriter(root, 0, 0, 5, "images", H, W, 10) as w,
    ):
        w.write(0, images[0], raw[0], scene[0])
    with (
        pytest.raises(DataError, match="NaN"),
        store.ShardWriter(root, 1, 5, 5, "images", H, W, 10) as w,
    ):
        w.write(0, images[5], np.full(10, np.nan), scene[5])
    leftovers = [
        p.name for p in root.iterdir() if p.name not in ("manifest.json", ".manifest.lock")
    ]
    assert leftovers == []
    assert store.missing_shards(root) == [0, 1]
    with pytest.raises(UsageError, match="samples"):
        store.ShardWriter(root, 0, 1, 5, "images", H, W, 10)
    with pytest.raises(UsageError, match="height"):
        store.ShardWriter(root, 0, 0, 5, "images", H + 1, W, 10)
    with pytest.raises(UsageError, match="out of range"):
        store.ShardWriter(root, 2, 10, 5, "images", H, W, 10)
    with store.ShardWriter(root, 0, 0, 5, "images", H, W, 10) as w:
        with pytest.raises(ValueError):
            w.write(0, images[0].astype(np.float32), raw[0], scene[0])
        w.write_batch(0, images[:5], raw[:5], scene[:5])
        with pytest.raises(ValueError, match="twice"):
            w.write(1, images[1], raw[1], scene[1])
    assert store.missing_shards(root) == [1]


def test_disk_full_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _data(5)
    store.create_dataset(root, "images", 5, 5, H, W, 10, {})

    def full(path: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.writer, "sha256_file", full)
    with (
        pytest.raises(DataError, match="disk full"),
        store.ShardWriter(root, 0, 0, 5, "images", H, W, 10) as w,
    ):
        w.write_batch(0, images, raw, scene)
    assert sorted(p.name for p in root.iterdir()) == [".manifest.lock", "manifest.json"]
    assert store.missing_shards(root) == [0]
