"""Batch buffers: reused shared-memory slots inside workers (:mod:`~ident3d.data.handoff`),
the reusable (pinned where CUDA exists) buffer pool of the main process, batches built by
``__getitems__`` and the :func:`collate` that passes them through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import default_collate, default_collate_fn_map

from ident3d.data.handoff import _RINGS, leased

# Ring slots per batch shape in a worker: the batches in flight (prefetch_factor, 2 by
# default; two buffers per kNN batch), the one the caller holds and one not yet released.
_WORKER_SLOTS = 8


class _BufferPool:
    """Reusable batch buffers for reads in the main process (``num_workers=0``).

    A fresh 77 MB batch costs its first-touch page faults on every batch (glibc hands blocks
    over 32 MB straight back to the kernel); measured here, filling a fresh buffer took 5x as
    long as refilling one. A pooled buffer is handed out again only when nothing but the pool
    references its storage any more (torch's storage use count), so a batch the caller still
    holds, or any view or numpy array of it, is never overwritten. Where CUDA is available
    the buffers are pinned (page-locked), so ``x.cuda(non_blocking=True)`` copies straight
    from them and ``DataLoader(pin_memory=True)`` has nothing left to do (torch returns a
    pinned tensor as it is). Inside DataLoader workers batches go to the worker's ring of
    shared-memory slots (:mod:`~ident3d.data.handoff`).
    """

    _KEEP = 3  # buffers kept per shape

    def __init__(self, pin: bool | None = None) -> None:
        self._pool: dict[tuple[int, ...], list[tuple[torch.Tensor, int]]] = {}
        self.pin = pin  # None: pinned when CUDA is available

    @staticmethod
    def _use_count(t: torch.Tensor) -> int | None:
        fn = getattr(torch._C, "_storage_Use_Count", None)
        if fn is None:  # pragma: no cover - older or newer torch without it: no reuse
            return None
        return int(fn(t.untyped_storage()._cdata))

    def get(self, shape: tuple[int, ...]) -> torch.Tensor:
        if get_worker_info() is not None:
            return _RINGS.get(shape, _WORKER_SLOTS)
        pool = self._pool.setdefault(shape, [])
        for t, base in pool:
            if self._use_count(t) == base:
                return t.view(t.shape)  # a new view: it counts as a use while it lives
        if self.pin is None:
            self.pin = torch.cuda.is_available()
        t = torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin)
        base = self._use_count(t)
        if base is not None and len(pool) < self._KEEP:
            pool.append((t, base))
        return t.view(t.shape)


class _Item(tuple):
    """One item cut from a batch built by ``__getitems__`` (a plain tuple otherwise).

    Its type is registered in torch's ``default_collate_fn_map`` (the extension point torch
    documents for ``default_collate``), so that the default collate of a plain
    ``DataLoader(ds, batch_size=...)`` hands over the batch ``__getitems__`` already built
    instead of stacking it again item by item (:func:`_collate_items`).
    """

    __slots__ = ()


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
        # In a worker, a batch viewing ring slots travels as a LeasedBatch (handoff).
        self.batch = leased(batch) if batch is not None and get_worker_info() is not None else batch
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
        return _Item(out)

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


def _collate_items(batch: Sequence[Any], *, collate_fn_map: dict[Any, Any] | None = None) -> Any:
    """``default_collate`` for a batch whose first item is an :class:`_Item`: the whole
    ``__getitems__`` batch as it is (no copy), or, for items gathered some other way (a list
    of them), a field-by-field collate as torch does for tuples."""
    if isinstance(batch, _Items) and batch.batch is not None:
        return batch.batch
    from torch.utils.data._utils.collate import collate as _torch_collate

    fields = list(zip(*batch, strict=True))
    return tuple(_torch_collate(list(f), collate_fn_map=collate_fn_map) for f in fields)


# torch looks an element's exact type up first, so this entry applies to _Item only.
default_collate_fn_map[_Item] = _collate_items


def _chw(hwc: torch.Tensor) -> torch.Tensor:
    """``(..., H, W, 3)`` -> ``(..., 3, H, W)`` view (channels-last memory)."""
    return hwc.movedim(-1, -3)
