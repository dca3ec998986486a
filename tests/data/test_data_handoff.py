"""Tests of ident3d.data.handoff: workers reuse their shared batch buffers, but never one the
main process still holds; every index once per epoch, under fork and spawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import _chw

from ident3d import data as D
from ident3d.data import handoff


def _check(batch: tuple[torch.Tensor, ...], images: np.ndarray, raw: np.ndarray) -> list[int]:
    x, z = batch
    idx = x[:, 0, 0, 0].tolist()  # the encoded sample index
    assert torch.equal(x, _chw(images[idx])) and torch.equal(z, torch.from_numpy(raw[idx]))
    return idx


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_held_batches_are_never_overwritten_and_slots_are_reused(
    store: tuple[Path, np.ndarray, np.ndarray], context: str
) -> None:
    root, images, raw = store
    slots = set()  # (ring, slot) of the batches received, as the main process records them
    leased = 0
    ds = D.ImageDataset(root)
    # A plain DataLoader, torch's default collate, persistent workers over three epochs.
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, shuffle=True, num_workers=2, persistent_workers=True,
        multiprocessing_context=context,
    )  # fmt: skip
    held: list[tuple[torch.Tensor, ...]] = []
    for _ in range(3):
        seen = []
        for batch in loader:
            seen.extend(_check(batch, images, raw))
            ptr = batch[0].untyped_storage().data_ptr()
            held_now = handoff.held_slots()
            leased += any(p == ptr for _, _, p in held_now)
            slots.update((ring, s) for ring, s, _ in held_now)
            held = [*held[-2:], batch]  # keep the last three batches
            for old in held:  # still intact, although later batches reused slots
                _check(old, images, raw)
        assert sorted(seen) == list(range(len(raw)))
    n_batches = 3 * -(-len(raw) // 2)
    assert leased == n_batches  # every batch came in a ring slot...
    assert len(slots) <= 2 * 8 < n_batches  # ...and slots were reused


def test_all_batches_kept(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    # Nothing is released: the rings fill up and workers fall back to fresh shared memory.
    root, images, raw = store
    ds = D.ImageDataset(root)
    loader = D.make_loader(
        ds, 1, shuffle=True, seed=2, num_workers=1, multiprocessing_context="fork"
    )
    batches = list(loader)
    assert sorted(i for b in batches for i in _check(b, images, raw)) == list(range(len(raw)))


def test_pairs_and_knn_through_worker_slots(
    store: tuple[Path, np.ndarray, np.ndarray], pairs_store: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    root, images, _ = pairs_store
    loader = D.make_loader(D.PairDataset(root), 3, shuffle=True, num_workers=1,
                           multiprocessing_context="fork")  # fmt: skip
    seen = []
    for x, xt, _, _ in loader:
        idx = x[:, 0, 0, 0].tolist()
        assert torch.equal(x, _chw(images[idx, 0])) and torch.equal(xt, _chw(images[idx, 1]))
        seen += idx
    assert sorted(seen) == list(range(len(images)))
    knn = D.KNNPairDataset(store[0], sigma=0.2, seed=1)
    ref = D.collate(knn.__getitems__([(0, i) for i in range(len(knn))]))
    loader = D.make_loader(knn, 4, num_workers=1, multiprocessing_context="fork")
    got = [torch.cat(parts) for parts in zip(*loader, strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))


def test_slot_ring_reuses_only_free_or_unreferenced_slots() -> None:
    ring = handoff.SlotRing((3, 2), slots=2)
    a = ring.get()
    b = ring.get()
    c = ring.get()  # both slots taken: a fresh, unpooled buffer
    assert ring.slot_of(a) == 0 and ring.slot_of(b) == 1 and ring.slot_of(c) is None
    ring.state[0] = handoff._SENT  # a went to the main process
    del b  # b was filled but never sent, and nothing references it: free again
    d = ring.get()
    assert ring.slot_of(d) == 1
    assert ring.slot_of(ring.get()) is None  # slot 0 is still the main process's
    ring.state[0] = handoff._FREE  # released there
    assert ring.get().data_ptr() == a.data_ptr()


def test_a_batch_sent_while_its_slot_is_checked_is_not_refilled(monkeypatch) -> None:
    """The race of the worker's two threads: the DataLoader's queue feeder pickles a batch
    (marking its slot sent) and drops it while the worker's main thread looks for a free
    slot. Here the feeder runs exactly between the ring's two reads (the slot's use count and
    its state), whichever order they come in: the slot must not be handed out again."""
    rings = handoff._Rings()
    monkeypatch.setattr(handoff, "_RINGS", rings)
    x = rings.get((2, 3), 2)
    x.fill_(7)
    queue = [handoff.leased((x,))]  # the batch waiting in the queue's buffer
    del x
    assert isinstance(queue[0], handoff.LeasedBatch)
    real = handoff._use_count

    def feeder_runs_now(t: torch.Tensor) -> int | None:
        if queue:
            queue.pop().__reduce__()  # pickled: marked sent; then dropped
        return real(t)

    monkeypatch.setattr(handoff, "_use_count", feeder_runs_now)
    ring = next(iter(rings.rings.values()))
    y = rings.get((2, 3), 2)
    assert not queue and int(ring.state[0]) == handoff._SENT
    assert ring.slot_of(y) == 1  # a new slot; slot 0 is the main process's until it frees it
    assert int(ring.buffers[0][0].reshape(-1)[0]) == 7
