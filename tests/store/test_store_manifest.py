"""Tests of ident3d.store.manifest: creating datasets, commits under the lock, completeness."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from store_helpers import H, W, _data, _make

from ident3d import store
from ident3d.errors import DataError, UsageError


def test_create_dataset_reuse_conflict_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make(root)
    again = store.create_dataset(root, "images", 25, 10, H, W, 10, {"preset": "test", "seed": 1})
    assert len(again["shards"]) == 3  # reused for resume, shards kept
    with pytest.raises(UsageError, match="config"):
        store.create_dataset(root, "images", 25, 10, H, W, 10, {"preset": "test", "seed": 2})
    with pytest.raises(UsageError, match="shard_size"):
        store.create_dataset(root, "images", 25, 5, H, W, 10, {"preset": "test", "seed": 1})
    fresh = store.create_dataset(root, "images", 25, 5, H, W, 10, {}, overwrite=True)
    assert fresh["shards"] == [] and fresh["num_shards"] == 5
    assert not list(root.glob("shard-*.h5"))
    with pytest.raises(UsageError):
        store.create_dataset(tmp_path / "x", "triples", 5, 5, H, W, 10, {})
    with pytest.raises(UsageError):
        store.create_dataset(tmp_path / "x", "images", 0, 5, H, W, 10, {})
    with pytest.raises(UsageError, match="JSON"):
        store.create_dataset(tmp_path / "x", "images", 5, 5, H, W, 10, {"f": object()})


def test_incomplete_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _data(25)
    m = store.create_dataset(root, "images", 25, 10, H, W, 10, {})
    with store.ShardWriter(root, 1, 10, 10, "images", H, W, 10) as w:
        w.write_batch(0, images[10:20], raw[10:20], scene[10:20])
    assert store.missing_shards(root) == [0, 2]
    assert not store.is_complete(store.read_manifest(root))
    with pytest.raises(DataError, match="incomplete"):
        store.open_dataset(root)
    ds = store.open_dataset(root, allow_incomplete=True)
    assert len(ds) == 25 and ds.missing_shards() == [0, 2]
    np.testing.assert_array_equal(ds.read(12).images, images[12])
    with pytest.raises(DataError, match="shard 0"):
        ds.read(3)
    with pytest.raises(DataError):
        ds.raw_latents()
    assert m["num_shards"] == 3


def _write_shards(root: str, shards: list[int]) -> None:
    images, raw, scene = _data(80, seed=3)
    m = store.read_manifest(root)
    for k in shards:
        a, c = store.shard_range(m, k)
        with store.ShardWriter(root, k, a, c, "images", H, W, 10) as w:
            w.write_batch(0, images[a : a + c], raw[a : a + c], scene[a : a + c])


def test_two_processes_write_one_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    store.create_dataset(root, "images", 80, 2, H, W, 10, {"run": "concurrent"})
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_write_shards, args=(str(root), list(range(r, 40, 2)))) for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert store.missing_shards(root) == []
    report = store.verify_dataset(root)
    assert report.ok, report.lines()
    images, _, _ = _data(80, seed=3)
    np.testing.assert_array_equal(store.open_dataset(root).read_slice(0, 80).images, images)


def test_rewriting_a_shard_replaces_its_entry(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _make(root, n=20, shard_size=10)
    other = images[::-1].copy()
    with store.ShardWriter(root, 1, 10, 10, "images", H, W, 10) as w:
        w.write_batch(0, other[10:20], raw[10:20], scene[10:20])
    m = store.read_manifest(root)
    assert [e["index"] for e in m["shards"]] == [0, 1]
    assert store.verify_dataset(root).ok
    ds = store.open_dataset(root)
    np.testing.assert_array_equal(ds.read_slice(10, 20).images, other[10:20])
    np.testing.assert_allclose(
        ds.mean, np.concatenate([images[:10], other[10:20]]).reshape(-1, 3).mean(0) / 255
    )
