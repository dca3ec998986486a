"""Tests of ident3d.data.buffers: the main process's batch buffers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import _chw

from ident3d import data as D


def test_main_process_buffers_reused_only_when_released(
    store: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    root, images, _ = store
    ds = D.ImageDataset(root)
    a, _ = D.collate(ds.__getitems__([0, 1, 2]))
    a_copy = a.clone()
    b, _ = D.collate(ds.__getitems__([3, 4, 5]))  # a is still held: a new buffer
    assert a.data_ptr() != b.data_ptr() and torch.equal(a, a_copy)
    arr = b.numpy() if b.is_contiguous() else b.permute(0, 2, 3, 1).numpy()
    ptr_b = b.data_ptr()
    del b
    c, _ = D.collate(ds.__getitems__([6, 7, 8]))  # a numpy view of b still holds it
    assert c.data_ptr() not in (a.data_ptr(), ptr_b)
    assert np.array_equal(arr, images[[3, 4, 5]])
    ptr_c = c.data_ptr()
    del arr, c
    d, _ = D.collate(ds.__getitems__([9, 10, 11]))  # released buffers are reused
    assert d.data_ptr() in (ptr_b, ptr_c)
    assert torch.equal(a, a_copy) and torch.equal(d, _chw(images[[9, 10, 11]]))


def test_default_collate_passes_getitems_batches_through(
    store: tuple[Path, np.ndarray, np.ndarray], pairs_store: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    from torch.utils.data import default_collate

    root, images, raw = store
    ds = D.ImageDataset(root)
    items = ds.__getitems__([4, 2, 9])
    out = default_collate(items)  # what a plain DataLoader applies
    assert out[0] is items.batch[0] and out[1] is items.batch[1]  # no copy
    assert torch.equal(out[0], _chw(images[[4, 2, 9]]))
    # Items gathered some other way (a list of them) are stacked field by field.
    some = default_collate([items[2], items[0]])
    assert torch.equal(some[0], _chw(images[[9, 4]]))
    assert torch.equal(some[1], torch.from_numpy(raw[[9, 4]]))
    pairs = D.PairDataset(pairs_store[0])
    p = pairs.__getitems__([1, 0])
    assert all(a is b for a, b in zip(default_collate(p), p.batch, strict=True))


def test_plain_dataloader_gets_the_pool_buffer(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = store
    ds = D.ImageDataset(root)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, shuffle=True)
    x, _ = next(iter(loader))
    pooled = [t.data_ptr() for t, _ in ds._pool._pool[(5, *images.shape[1:])]]
    assert x.data_ptr() in pooled  # read once, into the reused buffer, and handed over
    assert x.is_contiguous(memory_format=torch.channels_last)
    idx = x[:, 0, 0, 0].tolist()
    assert torch.equal(x, _chw(images[idx]))


@pytest.mark.gpu
def test_main_process_batches_are_pinned_where_cuda_exists(
    store: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    root, images, _ = store
    ds = D.ImageDataset(root)
    for loader in (D.make_loader(ds, 4, shuffle=True), torch.utils.data.DataLoader(ds, 4)):
        x, _ = next(iter(loader))
        assert x.is_pinned()
        idx = x[:, 0, 0, 0].tolist()
        assert torch.equal(x.cuda(non_blocking=True).cpu(), _chw(images[idx]))
    # Workers: slots in shared memory, pinned once by torch's pin thread, then released.
    loader = D.make_loader(ds, 4, shuffle=True, num_workers=1, pin_memory=True,
                           multiprocessing_context="spawn")  # fmt: skip
    for _ in range(2):
        for x, _ in loader:
            assert x.is_pinned() and torch.equal(x, _chw(images[x[:, 0, 0, 0].tolist()]))
    plain = D.ImageDataset(root)
    plain._pool.pin = False
    assert not D.collate(plain.__getitems__([0, 1]))[0].is_pinned()
