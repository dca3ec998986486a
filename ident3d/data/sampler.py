"""The epoch sampler: indices in order or shuffled per ``(seed, epoch)``, optionally as
``(epoch, i)`` for the kNN datasets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from ident3d.errors import UsageError

# Seed-sequence spawn key (2, epoch) for the shuffle; kNN draws use (1, epoch)
# (ident3d.data.knn_pair_dataset._DRAW_KEY).
_SHUFFLE_KEY = 2


def _split_index(index: Any) -> tuple[int | None, int]:
    """``i`` or ``(epoch, i)`` (what :class:`EpochSampler` yields for kNN datasets)."""
    if isinstance(index, tuple | list) and len(index) == 2:
        return int(index[0]), int(index[1])
    if isinstance(index, torch.Tensor):
        index = index.item()
    return None, int(index)


class EpochSampler(Sampler):
    """Indices ``0..n-1`` in order or shuffled, reshuffled every epoch from ``(seed, epoch)``.

    Each ``iter()`` runs one epoch and then advances the epoch counter (or set it with
    :meth:`set_epoch`). With ``with_epoch=True`` it yields ``(epoch, i)`` so that a
    :class:`KNNPairDataset` knows the epoch even in persistent workers that never see
    ``set_epoch`` calls made in the main process.

    ``block_size`` (with ``shuffle``): shuffle runs of ``block_size`` consecutive samples
    instead of single samples (the order of the blocks is a permutation drawn from
    ``(seed, epoch)``; inside a block the order is ascending). A batch is then a few runs that
    the memory-mapped store copies in one piece each. A dataset's samples are drawn i.i.d. in
    index order, so a block-shuffled batch is as random a sample as a shuffled one; only
    which samples share a batch is less varied from epoch to epoch.
    """

    def __init__(
        self,
        n: int,
        shuffle: bool = False,
        seed: int = 0,
        with_epoch: bool = False,
        start_epoch: int = 0,
        block_size: int | None = None,
    ) -> None:
        if n < 0:
            raise UsageError(f"sampler size must be >= 0, got {n}.")
        if block_size is not None and int(block_size) < 1:
            raise UsageError(f"block_size must be positive, got {block_size}.")
        self.block_size = None if block_size is None or int(block_size) == 1 else int(block_size)
        self.n, self.shuffle, self.seed, self.with_epoch = (
            int(n),
            bool(shuffle),
            int(seed),
            with_epoch,
        )
        self.epoch = int(start_epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The index order of ``epoch``."""
        if not self.shuffle:
            return np.arange(self.n)
        rng = np.random.default_rng(
            np.random.SeedSequence(self.seed, spawn_key=(_SHUFFLE_KEY, epoch))
        )
        if self.block_size is None:
            return rng.permutation(self.n)
        starts = rng.permutation(-(-self.n // self.block_size)) * self.block_size
        if not len(starts):
            return np.arange(0)
        runs = starts[:, None] + np.arange(self.block_size)[None, :]
        return runs[runs < self.n]  # the last block may be short

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch).tolist()
        if self.with_epoch:
            return iter([(epoch, i) for i in order])
        return iter(order)

    def __len__(self) -> int:
        return self.n
