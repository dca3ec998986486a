"""Tests of ident3d.data.loader (and the epoch sampler): every index once per epoch, any workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import H, W

from ident3d import data as D


def _collect(loader: torch.utils.data.DataLoader, n: int) -> list[int]:
    seen = []
    for x, _z in loader:
        seen.extend(x[:, 0, 0, 0].tolist())  # the encoded sample index (n < 256)
        assert x.shape[1:] == (3, H, W)
    return seen


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_every_index_once_per_epoch(
    store: tuple[Path, np.ndarray, np.ndarray], context: str
) -> None:
    root, _, raw = store
    ds = D.ImageDataset(root)
    loader = D.make_loader(ds, 4, shuffle=True, seed=3, num_workers=2, persistent_workers=True,
                           multiprocessing_context=context)  # fmt: skip
    orders = []
    for _ in range(2):
        seen = _collect(loader, len(raw))
        assert sorted(seen) == list(range(len(raw)))
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled per epoch
    if context == "spawn":
        return
    # The plain DataLoader with torch's default collate works too.
    plain = torch.utils.data.DataLoader(
        ds, batch_size=5, num_workers=2, multiprocessing_context=context
    )
    assert sorted(_collect(plain, len(raw))) == list(range(len(raw)))
