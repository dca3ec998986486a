"""The DataLoader factory: :func:`make_loader` with the settings these datasets want."""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ident3d.data.buffers import collate
from ident3d.data.knn_pair_dataset import KNNPairDataset
from ident3d.data.sampler import EpochSampler
from ident3d.errors import UsageError


def make_loader(
    dataset: TorchDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    multiprocessing_context: str | None = None,
    prefetch_factor: int | None = None,
    start_epoch: int = 0,
    block_size: int | None = None,
) -> DataLoader:
    """A standard ``DataLoader`` set up for these datasets.

    It uses an :class:`EpochSampler` (seeded shuffling, reshuffled per epoch; for kNN datasets
    it also carries the epoch into the workers) and :func:`collate`, which takes the batches
    that ``__getitems__`` builds in shared memory as they are. Each epoch (each ``iter()``)
    gives every index exactly once. ``block_size`` (with ``shuffle``) shuffles runs of that
    many consecutive samples instead of single ones (:class:`EpochSampler`).
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}.")
    if num_workers < 0:
        raise UsageError(f"num_workers must be >= 0, got {num_workers}.")
    if multiprocessing_context not in (None, "fork", "spawn", "forkserver"):
        raise UsageError(
            f"multiprocessing_context must be fork, spawn or forkserver, got {multiprocessing_context!r}."
        )
    sampler = EpochSampler(
        len(dataset),  # type: ignore[arg-type]
        shuffle=shuffle,
        seed=seed,
        with_epoch=isinstance(dataset, KNNPairDataset),
        start_epoch=start_epoch,
        block_size=block_size,
    )
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
        kwargs["multiprocessing_context"] = multiprocessing_context
        if prefetch_factor is not None:
            kwargs["prefetch_factor"] = prefetch_factor
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        **kwargs,
    )
