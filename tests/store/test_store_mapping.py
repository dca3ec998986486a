"""Tests of ident3d.store.mapping: where an uncompressed shard's image bytes lie, mapped."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from store_helpers import _make

from ident3d import store
from ident3d.errors import DataError
from ident3d.store import mapping
from ident3d.store.format import UnsafeDatasetError
from ident3d.store.mapping import map_images


def _shard(root: Path, k: int = 0) -> Path:
    return root / store.open_dataset(root).shards()[k].file


def test_chunked_uncompressed_shard_is_mapped(tmp_path: Path) -> None:
    images, _, _ = _make(tmp_path / "d", n=25, shard_size=10)
    m = map_images(_shard(tmp_path / "d", 1))
    assert m is not None and m.layout == "chunked" and len(m) == 10
    assert m.nbytes == images[0].nbytes and m.sample_shape == images.shape[1:]
    for j in range(10):
        assert np.array_equal(m.sample(j), images[10 + j])
    assert not m.buffer.flags.writeable  # read-only: a reader cannot damage the shard


def test_contiguous_dataset_is_mapped_at_its_offset(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (4, 3, 2, 3), dtype=np.uint8)
    path = tmp_path / "shard-00000.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("latents", data=np.zeros(7))  # something before the images
        f.create_dataset("images", data=data)
    m = map_images(path)
    assert m is not None and m.layout == "contiguous"
    with h5py.File(path, "r") as f:
        assert m.offsets[0] == f["images"].id.get_offset()
    assert all(np.array_equal(m.sample(j), data[j]) for j in range(4))


@pytest.mark.parametrize("compression", ["lz4", "gzip"])
def test_compressed_shards_are_not_mapped(tmp_path: Path, compression: str) -> None:
    _make(tmp_path / "d", n=5, shard_size=5, compression=compression)
    assert map_images(_shard(tmp_path / "d")) is None


def test_other_layouts_are_not_mapped(tmp_path: Path) -> None:
    path = tmp_path / "shard-00000.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", shape=(4, 3, 2, 3), dtype=np.uint8, chunks=(2, 3, 2, 3))
        f["images"][...] = 1  # chunks of two samples: not one sample per chunk
    assert map_images(path) is None
    with h5py.File(path, "w") as f:  # chunks never written: nothing to map
        f.create_dataset("images", shape=(4, 3, 2, 3), dtype=np.uint8, chunks=(1, 3, 2, 3))
    assert map_images(path) is None


def test_truncated_shard_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    _make(tmp_path / "d", n=10, shard_size=10)
    path = _shard(tmp_path / "d")
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(DataError, match=str(path)):
        map_images(path)


def test_extent_past_the_end_is_refused_before_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # HDF5 itself refuses most truncated files; this is the check for those it would open
    # (a mapping past the end of a file raises SIGBUS on access, not an exception).
    _make(tmp_path / "d", n=10, shard_size=10)
    path = _shard(tmp_path / "d")
    size = path.stat().st_size
    monkeypatch.setattr(
        mapping, "_extents", lambda p: ("chunked", np.array([0, size - 10]), (2, 5), 10)
    )
    assert map_images(path) is not None  # ends exactly at the end of the file: fine
    monkeypatch.setattr(
        mapping, "_extents", lambda p: ("chunked", np.array([0, size - 9]), (2, 5), 10)
    )
    with pytest.raises(DataError, match=r"damaged.*truncated"):
        map_images(path)


def test_symlinked_shard_is_refused(tmp_path: Path) -> None:
    _make(tmp_path / "d", n=5, shard_size=5)
    link = tmp_path / "link.h5"
    link.symlink_to(_shard(tmp_path / "d"))
    with pytest.raises(UnsafeDatasetError, match="symbolic link"):
        map_images(link)
