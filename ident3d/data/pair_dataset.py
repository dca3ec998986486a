"""The exact-pairs dataset: item ``i`` of a pairs dataset is ``(x, x_tilde, z, z_tilde)``
(plus the class label)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ident3d.data.buffers import _chw, _Items
from ident3d.data.dataset_base import _Base
from ident3d.data.sampler import _split_index
from ident3d.errors import UsageError


class PairDataset(_Base):
    """Exact positive pairs of a pairs dataset: item ``i`` is ``(x, x_tilde, z, z_tilde)``,
    plus the class label (an int, the same for both views: the object class is a content
    factor) where the dataset has classes, as in :class:`ImageDataset`.

    ``transform`` applies to each view, ``target_transform`` to each latent vector.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        allow_incomplete: bool = False,
        memory_map: bool = True,
    ) -> None:
        super().__init__(path, transform, target_transform, allow_incomplete, memory_map)
        if self.source.kind != "pairs":
            raise UsageError(
                f"{self.root} holds single images, not pairs: use KNNPairDataset to form "
                f"3DIdent-style nearest-neighbour pairs from it, or ImageDataset."
            )

    def __getitem__(self, index: Any) -> tuple[Any, ...]:
        _, i = _split_index(index)
        i = self.source.check_index(i)
        both = _chw(torch.from_numpy(self.source.image(i)))
        zz = torch.from_numpy(self.source.latents()[i].copy())
        x, xt, z, zt = both[0], both[1], zz[0], zz[1]
        if self.transform is not None:
            x, xt = self.transform(x), self.transform(xt)
        if self.target_transform is not None:
            z, zt = self.target_transform(z), self.target_transform(zt)
        cls = self.source.classes()
        return (x, xt, z, zt) if cls is None else (x, xt, z, zt, int(cls[i]))

    def __getitems__(self, indices: Sequence[Any]) -> list[Any]:
        idx = self.source.check_indices(indices)
        if self.transform is not None or self.target_transform is not None:
            return _Items(items=[self[i] for i in idx.tolist()])
        both = _chw(self._read_batch(idx))  # (B, 2, 3, H, W)
        zz = torch.from_numpy(self.source.latents()[idx])  # (B, 2, D)
        cls = self.source.classes()
        if cls is None:
            return _Items((both[:, 0], both[:, 1], zz[:, 0], zz[:, 1]))
        batch = (both[:, 0], both[:, 1], zz[:, 0], zz[:, 1], torch.from_numpy(cls[idx]))
        return _Items(batch, scalars=(4,))
