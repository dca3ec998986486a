"""Tests of ident3d.data.buffers: the main process's batch buffers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
