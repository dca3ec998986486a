"""The worker hand-off: batch buffers in shared memory that a DataLoader worker reuses once
the main process has let go of them.

A fresh shared-memory batch costs its first-touch page faults twice (the worker zero-fills
it, the main process maps it anew); measured here that was most of a worker's time per batch.
So each worker keeps a small ring of shared buffers per batch shape (:class:`SlotRing`) and
reuses a buffer only when it is provably free:

- each ring has a shared byte per slot: ``0`` free, ``1`` filled (still in the worker), ``2``
  sent (the main process owns it);
- a batch leaving the worker is a :class:`LeasedBatch`; pickling it marks its slots sent, and
  unpickling it in the main process (:func:`_rebuild`) gives the caller a plain tuple and
  records a weak reference to each slot's storage there;
- whenever another batch arrives, the main process sets the byte of every recorded slot whose
  storage has died (no tensor, view or numpy array of it is left: the caller dropped the batch,
  or ``pin_memory`` copied it) back to ``0``;
- a slot filled but never sent (a custom collate copied it out) is free again once nothing in
  the worker references it (torch's storage use count).

A batch the caller keeps is therefore never overwritten; with no free slot (the caller holds
many batches) the worker takes fresh shared memory, as torch's default collate does.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef

_FREE, _FILLED, _SENT = 0, 1, 2

# (ring key, ring state, slot, slot buffer): what a batch carries for each slot it views.
_Lease = tuple[tuple[int, int], torch.Tensor, int, torch.Tensor]


def _use_count(t: torch.Tensor) -> int | None:
    fn = getattr(torch._C, "_storage_Use_Count", None)
    if fn is None:  # pragma: no cover - a torch without it: never reuse in the worker
        return None
    return int(fn(t.untyped_storage()._cdata))


def _shared(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return proto.new(storage).resize_(*shape)


class SlotRing:
    """Up to ``slots`` reusable shared buffers of one shape, in one worker process."""

    def __init__(
        self, shape: tuple[int, ...], slots: int, dtype: torch.dtype = torch.uint8
    ) -> None:
        self.shape, self.dtype, self.slots = shape, dtype, int(slots)
        self.key = (os.getpid(), id(self))  # names the ring in the receiving process
        self.state = _shared((self.slots,), torch.uint8)
        self.state.zero_()
        self.buffers: list[tuple[torch.Tensor, int | None]] = []
        self._by_ptr: dict[int, int] = {}

    def get(self) -> torch.Tensor:
        """A free slot (marked filled), or a fresh unpooled shared buffer if none is free."""
        state = self.state
        for s, (buf, base) in enumerate(self.buffers):
            # The use count first, then the state: the queue's feeder thread marks a batch
            # sent while pickling it and only then drops it. Read the other way round, a
            # batch could be read as filled, then pickled and dropped by the feeder, then
            # found unreferenced, and its slot refilled while the main process reads it
            # (seen under load: about 1 batch in 1,000 epochs held another batch's images).
            unused = base is not None and _use_count(buf) == base
            st = int(state[s])
            if st == _FREE or (st == _FILLED and unused):
                state[s] = _FILLED
                return buf.view(buf.shape)  # a new view: it counts as a use while it lives
        if len(self.buffers) < self.slots:
            buf = _shared(self.shape, self.dtype)
            s = len(self.buffers)
            self.buffers.append((buf, _use_count(buf)))
            self._by_ptr[buf.untyped_storage().data_ptr()] = s
            state[s] = _FILLED
            return buf.view(buf.shape)
        return _shared(self.shape, self.dtype)

    def slot_of(self, t: torch.Tensor) -> int | None:
        return self._by_ptr.get(t.untyped_storage().data_ptr())


class _Rings:
    """The rings of this worker process, one per shape."""

    def __init__(self) -> None:
        self.rings: dict[tuple[tuple[int, ...], torch.dtype], SlotRing] = {}

    def get(
        self, shape: tuple[int, ...], slots: int, dtype: torch.dtype = torch.uint8
    ) -> torch.Tensor:
        ring = self.rings.get((shape, dtype))
        if ring is None:
            ring = self.rings[(shape, dtype)] = SlotRing(shape, slots, dtype)
        return ring.get()

    def leases(self, parts: tuple[Any, ...]) -> list[_Lease]:
        """``(ring key, state, slot, buffer)`` for each ring slot a tensor in ``parts`` views."""
        out = []
        seen = set()
        for p in parts:
            if not isinstance(p, torch.Tensor):
                continue
            for ring in self.rings.values():
                s = ring.slot_of(p)
                if s is not None and (id(ring), s) not in seen:
                    seen.add((id(ring), s))
                    out.append((ring.key, ring.state, s, ring.buffers[s][0]))
        return out


_RINGS = _Rings()  # per process: each worker fills its own


class LeasedBatch(tuple):
    """A batch (tuple) whose tensors view ring slots; pickles to a plain tuple that releases
    the slots when the receiving process drops them."""

    leases: list[_Lease]

    def __reduce__(self) -> tuple[Any, ...]:
        for _, state, s, _ in self.leases:
            state[s] = _SENT
        return _rebuild, (tuple(self), list(self.leases))


def leased(batch: tuple[Any, ...]) -> tuple[Any, ...]:
    """``batch`` as a :class:`LeasedBatch` if it views ring slots of this process."""
    leases = _RINGS.leases(batch)
    if not leases:
        return batch
    out = LeasedBatch(batch)
    out.leases = leases
    return out


# -- the receiving (main) process
_LOCK = threading.Lock()
# The slots held in this process: (ring key, ring state, slot, weak reference, data pointer).
_OUT: list[tuple[tuple[int, int], torch.Tensor, int, StorageWeakRef, int]] = []


def release_dead() -> int:
    """Free every slot whose storage has died in this process; returns how many."""
    n = 0
    with _LOCK:
        keep = []
        for entry in _OUT:
            _, state, s, ref, _ = entry
            if ref.expired():
                state[s] = _FREE
                n += 1
            else:
                keep.append(entry)
        _OUT[:] = keep
    return n


def _rebuild(parts: tuple[Any, ...], leases: list[_Lease]) -> tuple[Any, ...]:
    release_dead()
    with _LOCK:
        for key, state, s, buf in leases:
            storage = buf.untyped_storage()
            _OUT.append((key, state, s, StorageWeakRef(storage), storage.data_ptr()))
    return parts


def held_slots() -> list[tuple[tuple[int, int], int, int]]:
    """``(ring key, slot, data pointer)`` of the worker slots this process holds now."""
    with _LOCK:
        return [(key, s, ptr) for key, _, s, ref, ptr in _OUT if not ref.expired()]
