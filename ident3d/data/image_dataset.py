"""The image dataset: item ``i`` is ``(image, latents)`` (plus the class label)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ident3d.data.buffers import _chw, _Items
from ident3d.data.dataset_base import _Base
from ident3d.data.sampler import _split_index
from ident3d.errors import UsageError


class ImageDataset(_Base):
    """Item ``i``: ``(image, latents)``, plus the class label where the dataset has classes.

    ``image`` is a uint8 ``(3, H, W)`` tensor (channels-last memory); ``latents`` float32
    ``(raw_dim,)`` raw units. ``transform`` is applied to the image, ``target_transform`` to
    the latents. Reads the store or an original 3DIdent/Causal3DIdent folder.
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
        if self.source.kind != "images":
            raise UsageError(f"{self.root} holds pairs, not single images; use PairDataset.")

    def __getitem__(self, index: Any) -> tuple[Any, ...]:
        _, i = _split_index(index)
        i = self.source.check_index(i)
        x: Any = self._image_tensor(i)
        z: Any = self._latents_tensor(i)
        if self.transform is not None:
            x = self.transform(x)
        if self.target_transform is not None:
            z = self.target_transform(z)
        cls = self.source.classes()
        return (x, z) if cls is None else (x, z, int(cls[i]))

    def __getitems__(self, indices: Sequence[Any]) -> list[Any]:
        idx = self.source.check_indices(indices)
        if self.transform is not None or self.target_transform is not None:
            return _Items(items=[self[i] for i in idx.tolist()])
        images = _chw(self._read_batch(idx))
        z = torch.from_numpy(self.source.latents()[idx])
        cls = self.source.classes()
        if cls is None:
            return _Items((images, z))
        return _Items((images, z, torch.from_numpy(cls[idx])), scalars=(2,))
