"""Tests of ident3d.data.gather: the memory-mapped read path gives exactly today's items, is
taken for uncompressed shards only, and refuses damaged shards with a DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import _chw, make_contiguous, make_store

from ident3d import data as D
from ident3d.data.gather import _runs
from ident3d.errors import DataError
from ident3d.store.mapping import map_images

_BATCHES = [[3, 17, 0, 9, 22, 4], [5, 6, 7, 8, 9, 10, 11], [22], [1, 1, 2], list(range(23))]


def _assert_same_batches(a: D.ImageDataset, b: D.ImageDataset, batches: list[list[int]]) -> None:
    for idx in batches:
        ba, bb = D.collate(a.__getitems__(idx)), D.collate(b.__getitems__(idx))
        assert len(ba) == len(bb)
        for x, y in zip(ba, bb, strict=True):
            assert x.dtype == y.dtype and torch.equal(x, y)
    for i in (0, 7, len(a) - 1, -1):
        for x, y in zip(a[i], b[i], strict=True):
            assert torch.equal(torch.as_tensor(x), torch.as_tensor(y))


def _forbid_hdf5_image_reads(ds: D.ImageDataset, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise AssertionError("read through HDF5, not the memory map")

    monkeypatch.setattr(ds.source.ds, "read_into", fail)


def test_runs_split_at_gaps_and_shard_boundaries() -> None:
    idx = np.array([3, 4, 5, 9, 10, 2, 2], np.int64)
    assert _runs(idx, 5) == [(0, 0, 3, 2), (2, 1, 0, 1), (3, 1, 4, 1), (4, 2, 0, 1),
                             (5, 0, 2, 1), (6, 0, 2, 1)]  # fmt: skip


def test_images_identical_to_the_hdf5_path(
    store: tuple[Path, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, images, raw = store
    mapped, plain = D.ImageDataset(root), D.ImageDataset(root, memory_map=False)
    assert plain.source.mapped is None
    _forbid_hdf5_image_reads(mapped, monkeypatch)
    _assert_same_batches(mapped, plain, _BATCHES)
    x, z = D.collate(mapped.__getitems__([21, 2, 3, 4, 5, 6]))
    assert torch.equal(x, _chw(images[[21, 2, 3, 4, 5, 6]]))
    assert torch.equal(z, torch.from_numpy(raw[[21, 2, 3, 4, 5, 6]]))
    assert all(mapped.source.mapped.mapped(k) for k in range(5))
    assert "memory-mapped" in repr(mapped)


def test_pairs_identical_to_the_hdf5_path(
    pairs_store: tuple[Path, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, images, _ = pairs_store
    mapped, plain = D.PairDataset(root), D.PairDataset(root, memory_map=False)
    _forbid_hdf5_image_reads(mapped, monkeypatch)
    _assert_same_batches(mapped, plain, [[16, 0, 3, 4, 5, 8], list(range(17))])
    x, xt, _, _ = D.collate(mapped.__getitems__([16, 3, 4]))
    assert torch.equal(x, _chw(images[[16, 3, 4], 0])) and torch.equal(
        xt, _chw(images[[16, 3, 4], 1])
    )


def test_knn_pairs_identical_to_the_hdf5_path(
    store: tuple[Path, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _, _ = store
    mapped = D.KNNPairDataset(root, sigma=0.2, seed=4, return_info=True)
    plain = D.KNNPairDataset(root, sigma=0.2, seed=4, return_info=True, memory_map=False)
    _forbid_hdf5_image_reads(mapped, monkeypatch)
    for idx in ([(0, 3), (0, 9), (0, 1)], [(1, i) for i in range(23)]):
        a, b = D.collate(mapped.__getitems__(idx)), D.collate(plain.__getitems__(idx))
        for x, y in zip(a[:4], b[:4], strict=True):
            assert torch.equal(x, y)
        assert all(torch.equal(a[4][k], b[4][k]) for k in a[4])


def test_contiguous_shards_are_mapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, _ = make_store(tmp_path / "c", n=12, shard_size=5)
    make_contiguous(tmp_path / "c")
    mapped, plain = D.ImageDataset(tmp_path / "c"), D.ImageDataset(tmp_path / "c", memory_map=False)
    assert mapped.source.mapped.shard_map(0).layout == "contiguous"
    _forbid_hdf5_image_reads(mapped, monkeypatch)
    _assert_same_batches(mapped, plain, [[11, 0, 1, 2, 3, 4, 5], list(range(12))])
    assert torch.equal(D.collate(mapped.__getitems__(list(range(12))))[0], _chw(images))


@pytest.mark.parametrize("compression", ["lz4", "gzip"])
def test_compressed_shards_keep_the_hdf5_path(tmp_path: Path, compression: str) -> None:
    root = tmp_path / compression
    images, _ = make_store(root, n=9, shard_size=4, compression=compression)
    ds = D.ImageDataset(root)
    assert not any(ds.source.mapped.mapped(k) for k in range(3))
    x, _ = D.collate(ds.__getitems__([8, 0, 1, 2, 5]))
    assert torch.equal(x, _chw(images[[8, 0, 1, 2, 5]]))


def test_truncated_shard_is_a_data_error_not_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "t"
    make_store(root, n=10, shard_size=5)
    ds = D.ImageDataset(root)
    images = ds[0][0]  # latents loaded, shard 0 mapped, shard 1 not yet
    shard = root / "shard-00001.h5"
    cut = int(map_images(shard).offsets[-1]) + 10  # inside the last sample's images
    with open(shard, "r+b") as fh:
        fh.truncate(cut)
    assert torch.equal(ds.__getitems__([0, 1])[0][0], images)  # shard 0 still reads
    with pytest.raises(DataError, match="shard-00001.h5"):
        ds.__getitems__([0, 7])
    with pytest.raises(DataError, match="shard-00001.h5"):
        ds[8]


def test_block_shuffled_loader_every_index_once(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = store
    ds = D.ImageDataset(root)
    loader = D.make_loader(ds, 6, shuffle=True, seed=1, block_size=4)
    seen = torch.cat([x for x, _ in loader])
    order = D.EpochSampler(23, shuffle=True, seed=1, block_size=4).order(0)
    assert torch.equal(seen, _chw(images[order]))


def test_wrong_output_buffer_is_refused(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    reader = D.ImageDataset(store[0]).source.mapped
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        reader.read_many_into([0, 1], np.empty((3, *store[1].shape[1:]), np.uint8))
    with pytest.raises(ValueError, match="C-contiguous uint8"):
        reader.read_into(0, np.empty(store[1].shape[1:], np.float32))
