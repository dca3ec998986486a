"""Batch buffers: shared-memory tensors inside workers, the reusable buffer pool of the main
process, batches built by ``__getitems__`` and the :func:`collate` that passes them through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import default_collate


def _empty(shape: tuple[int, ...], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """A new tensor; in shared memory inside a DataLoader worker (no copy on the way back)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return proto.new(storage).resize_(*shape)


class _BufferPool:
    """Reusable batch buffers for reads in the main process (``num_workers=0``).

    A fresh 77 MB batch costs its first-touch page faults on every batch (glibc hands blocks
    over 32 MB straight back to the kernel); measured here, filling a fresh buffer took 5x as
    long as refilling one. A pooled buffer is handed out again only when nothing but the pool
    references its storage any more (torch's storage use count), so a batch the caller still
    holds, or any view or numpy array of it, is never overwritten. Inside DataLoader workers
    batches go to fresh shared memory instead (the main process owns them once sent).
    """

    _KEEP = 3  # buffers kept per shape

    def __init__(self) -> None:
        self._pool: dict[tuple[int, ...], list[tuple[torch.Tensor, int]]] = {}

    @staticmethod
    def _use_count(t: torch.Tensor) -> int | None:
        fn = getattr(torch._C, "_storage_Use_Count", None)
        if fn is None:  # pragma: no cover - older or newer torch without it: no reuse
            return None
        return int(fn(t.untyped_storage()._cdata))

    def get(self, shape: tuple[int, ...]) -> torch.Tensor:
        if get_worker_info() is not None:
            return _empty(shape)
        pool = self._pool.setdefault(shape, [])
        for t, base in pool:
            if self._use_count(t) == base:
                return t
        t = torch.empty(shape, dtype=torch.uint8)
        base = self._use_count(t)
        if base is not None and len(pool) < self._KEEP:
            pool.append((t, base))
        return t


class _Items(Sequence):
    """What ``__getitems__`` returns: a sequence of per-item tuples (so torch's
    ``default_collate`` works on it), backed by ``batch``, the same items already collated,
    which :func:`collate` returns as it is. Items are cut from the batch only when asked for.

    ``scalars``: positions of per-item Python ints (class labels) in an item.
    """

    def __init__(
        self,
        batch: tuple[Any, ...] | None = None,
        items: list[Any] | None = None,
        scalars: tuple[int, ...] = (),
    ) -> None:
        self.batch = batch
        self._items = items
        self._scalars = scalars
        self._n = len(items) if items is not None else len(batch[0])  # type: ignore[index]

    def __len__(self) -> int:
        return self._n

    def _item(self, k: int) -> tuple[Any, ...]:
        assert self.batch is not None
        out = []
        for pos, part in enumerate(self.batch):
            if isinstance(part, dict):
                out.append({key: v[k] for key, v in part.items()})
            elif pos in self._scalars:
                out.append(int(part[k]))
            else:
                out.append(part[k])
        return tuple(out)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(self._n))]
        if self._items is not None:
            return self._items[k]
        if not -self._n <= k < self._n:
            raise IndexError(k)
        return self._item(k % self._n)


def collate(items: list[Any]) -> Any:
    """Collate function for these datasets: a batch built by ``__getitems__`` is returned as
    it is (no second copy); anything else goes through torch's ``default_collate``."""
    if isinstance(items, _Items) and items.batch is not None:
        return items.batch
    return default_collate(items)


def _chw(hwc: torch.Tensor) -> torch.Tensor:
    """``(..., H, W, 3)`` -> ``(..., 3, H, W)`` view (channels-last memory)."""
    return hwc.movedim(-1, -3)
