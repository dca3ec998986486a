"""Where the image bytes of an uncompressed shard lie in its file: :func:`map_images` maps them
read-only (``numpy.memmap``) so readers can copy a sample straight from the page cache.

Only an ``images`` dataset stored without filters qualifies: contiguous layout (one extent at
the offset HDF5 reports, ``H5Dget_offset``) or chunked with one sample per chunk, every chunk
allocated, unfiltered and of one sample's size (``H5Dchunk_iter``). Compressed shards,
external or virtual storage, and anything else return ``None``: read those through
:class:`~ident3d.store.reader.Dataset`. Before anything is mapped, every extent is checked to
lie inside the file, so a truncated shard raises :class:`DataError` instead of the bus error a
mapping past the end of a file gives on access.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ident3d.errors import DataError
from ident3d.store.format import _check_shard_file, _h5py


@dataclass(frozen=True)
class MappedImages:
    """The images of one shard, mapped read-only.

    ``buffer`` is the whole file as a flat read-only uint8 array (backed by the map); sample
    ``j``'s images are the ``nbytes`` bytes at ``offsets[j]``, in ``sample_shape`` C order
    (a shard written in order holds them back to back, with a gap where HDF5 put an index
    node).
    """

    path: Path
    layout: str  # "contiguous" or "chunked"
    buffer: np.ndarray
    offsets: np.ndarray
    sample_shape: tuple[int, ...]
    nbytes: int

    def __len__(self) -> int:
        return len(self.offsets)

    def sample(self, j: int) -> np.ndarray:
        """A read-only view of sample ``j``'s images (no copy)."""
        o = int(self.offsets[j])
        return self.buffer[o : o + self.nbytes].reshape(self.sample_shape)


def _extents(path: Path) -> tuple[str, np.ndarray, tuple[int, ...], int] | None:
    h5py = _h5py()
    try:
        with h5py.File(path, "r") as f:
            if "images" not in f:
                raise DataError(f"shard {path} has no images dataset; run `ident3d verify`.")
            d = f["images"]
            if not isinstance(d, h5py.Dataset) or d.dtype != np.uint8 or d.ndim < 2:
                return None
            shape = tuple(int(s) for s in d.shape)
            count, sample_shape = shape[0], shape[1:]
            nbytes = int(np.prod(sample_shape))
            plist = d.id.get_create_plist()
            if plist.get_nfilters() != 0 or plist.get_external_count() != 0:
                return None
            layout = plist.get_layout()
            if layout == h5py.h5d.CONTIGUOUS:
                base = d.id.get_offset()
                if base is None:  # never written
                    return None
                return "contiguous", int(base) + nbytes * np.arange(count, dtype=np.int64), \
                    sample_shape, nbytes  # fmt: skip
            if layout != h5py.h5d.CHUNKED or d.chunks != (1, *sample_shape):
                return None
            offsets = np.full(count, -1, np.int64)
            bad = []

            def visit(info: object) -> None:
                j = info.chunk_offset[0]  # type: ignore[attr-defined]
                if info.filter_mask != 0 or info.size != nbytes or not 0 <= j < count:  # type: ignore[attr-defined]
                    bad.append(j)
                else:
                    offsets[j] = info.byte_offset  # type: ignore[attr-defined]

            if hasattr(d.id, "chunk_iter"):
                d.id.chunk_iter(visit)
            else:  # pragma: no cover - HDF5 before 1.12.3: one lookup per chunk
                for j in range(count):
                    info = d.id.get_chunk_info_by_coord((j,) + (0,) * len(sample_shape))
                    if info.byte_offset is not None:
                        visit(info)
            if bad or (offsets < 0).any():
                return None  # unallocated or odd chunks: h5py's path reads them correctly
            return "chunked", offsets, sample_shape, nbytes
    except OSError as exc:
        raise DataError(f"cannot read shard {path}: {exc}; run `ident3d verify`.") from None


def map_images(path: str | os.PathLike[str]) -> MappedImages | None:
    """Map the images of the shard file ``path`` read-only, or ``None`` when they are not
    stored as plain bytes (compressed, external, unallocated). :class:`DataError` for a file
    that cannot be read or is shorter than its image data (truncated)."""
    path = Path(path)
    _check_shard_file(path)
    found = _extents(path)
    if found is None:
        return None
    layout, offsets, sample_shape, nbytes = found
    size = path.stat().st_size
    end = int(offsets.max()) + nbytes if len(offsets) else 0
    if end > size or (len(offsets) and int(offsets.min()) < 0):
        raise DataError(
            f"shard {path} is damaged: its image data ends at byte {end:,} but the file has "
            f"{size:,} bytes (truncated?); run `ident3d verify`."
        )
    if not len(offsets):
        return None
    # A plain ndarray view of the memmap (it keeps the map alive): slicing it costs less
    # than slicing numpy.memmap, which runs Python code per view.
    buffer = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
    return MappedImages(path, layout, buffer, offsets, sample_shape, nbytes)
