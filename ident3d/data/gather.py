"""Batched image gathers from memory-mapped shards: the store read path with no copy but the
one into the batch buffer.

:class:`MappedReader` maps each uncompressed shard once per process
(:func:`ident3d.store.mapping.map_images`) and copies a batch's images straight from the
page cache into the caller's buffer: one ``memcpy`` per run of consecutive indices within a
shard (a random batch is runs of one; a sequential or block-shuffled one is a few long runs),
with no HDF5 call, no per-sample array and no lock. Shards that cannot be mapped (compressed)
are read through the store's reader, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ident3d.store.mapping import MappedImages, map_images
from ident3d.store.reader import Dataset


def _runs(idx: np.ndarray, shard_size: int) -> list[tuple[int, int, int, int]]:
    """``(pos, k, j, length)`` runs: ``idx[pos:pos+length]`` are samples ``j..j+length-1`` of
    shard ``k``."""
    k, j = np.divmod(idx, shard_size)
    if len(idx) == 1:
        return [(0, int(k[0]), int(j[0]), 1)]
    breaks = np.flatnonzero((np.diff(idx) != 1) | (np.diff(k) != 0)) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [len(idx)])))
    return list(
        zip(starts.tolist(), k[starts].tolist(), j[starts].tolist(), lengths.tolist(), strict=True)
    )


class MappedReader:
    """Per-process memory maps of a store's shards; :meth:`read_many_into` gathers a batch.

    Maps are made lazily in the process that reads and never pickled (a spawned worker maps
    again; a forked one keeps its parent's read-only maps, which stay valid).
    """

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.shard_size = ds.shard_size
        self.sample_shape = ds.image_shape
        self._maps: dict[int, MappedImages | None] = {}
        self._offset_lists: dict[int, list[int]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        state["_offset_lists"] = {}
        return state

    def shard_map(self, k: int) -> MappedImages | None:
        """Shard ``k``'s map, or ``None`` when it is not mappable (compressed)."""
        if k in self._maps:
            return self._maps[k]
        info = {s.index: s for s in self.ds.shards()}.get(k)
        m = None
        if info is not None:
            m = map_images(info.path)
            if m is not None and (len(m) != info.count or m.sample_shape != self.sample_shape):
                # The shard does not match the manifest: leave it to the store's reader, whose
                # errors the train and eval commands report as a dataset that cannot be read.
                m = None
        self._maps[k] = m
        return m

    def _check_out(self, out: np.ndarray, n: int) -> None:
        shape = (n, *self.sample_shape) if n >= 0 else self.sample_shape
        if out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")

    def read_into(self, i: int, out: np.ndarray) -> None:
        self._check_out(out, -1)
        k, j = divmod(int(i), self.shard_size)
        m = self.shard_map(k)
        if m is None:
            self.ds.read_into(i, out)
        else:
            np.copyto(out, m.sample(j))

    def read_many_into(self, indices: Sequence[int] | np.ndarray, out: np.ndarray) -> None:
        """Images of samples ``indices`` (already checked, non-negative) into ``out[b]``;
        ``out`` is C-contiguous, ``(len(indices), *sample_shape)``."""
        idx = np.asarray(indices, dtype=np.int64)
        self._check_out(out, len(idx))
        if not len(idx):
            return
        flat = out.reshape(-1)  # a view: out is C-contiguous
        nb = flat.size // len(idx)
        for pos, k, j, length in _runs(idx, self.shard_size):
            m = self.shard_map(k)
            if m is None:
                for b in range(pos, pos + length):
                    self.ds.read_into(int(idx[b]), out[b])
                continue
            buf, offs = m.buffer, self._offsets(k, m)
            o = offs[j]
            if length == 1 or offs[j + length - 1] - o == (length - 1) * nb:
                # one memcpy: the run lies back to back in the file
                flat[pos * nb : (pos + length) * nb] = buf[o : o + length * nb]
            else:
                for b in range(length):
                    o = offs[j + b]
                    flat[(pos + b) * nb : (pos + b + 1) * nb] = buf[o : o + nb]

    def _offsets(self, k: int, m: MappedImages) -> list[int]:
        offs = self._offset_lists.get(k)
        if offs is None:  # Python ints index faster than numpy scalars
            offs = self._offset_lists[k] = m.offsets.tolist()
        return offs

    def mapped(self, k: int) -> bool:
        """Whether shard ``k`` is read through its memory map (maps it if not yet done)."""
        return self.shard_map(k) is not None
