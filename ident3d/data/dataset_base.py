"""The shared machinery of the torch datasets: source, transforms, repr, statistics, loader."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from ident3d.data.buffers import _BufferPool, _chw
from ident3d.data.normalize import Normalize
from ident3d.data.sources import _open_source
from ident3d.errors import UsageError


class _Base(TorchDataset):
    """Shared machinery: the source, transforms, repr, statistics, loaders."""

    _repr_indent = 4

    def __init__(
        self,
        path: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        allow_incomplete: bool = False,
        memory_map: bool = True,
    ) -> None:
        if path is None or (isinstance(path, str) and not path):
            raise UsageError("a dataset path is required.")
        self.source = _open_source(path, allow_incomplete, memory_map)
        self.root = self.source.root
        self.transform = transform
        self.target_transform = target_transform
        self._pool = _BufferPool()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = _BufferPool()  # buffers stay in the process that made them
        return state

    # -- torchvision-style description
    @property
    def layout(self) -> str:
        """``store``, ``3dident``, ``causal3dident`` or ``pairs-folder``."""
        return self.source.layout

    @property
    def class_names(self) -> list[str] | None:
        return self.source.class_names

    @property
    def latents(self) -> np.ndarray:
        """The whole raw latent table, float32 ``(N, D)`` (pairs ``(N, 2, D)``)."""
        return self.source.latents()

    def __len__(self) -> int:
        return self.source.n

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        head = "Dataset " + self.__class__.__name__
        src = self.source
        body = [
            f"Number of datapoints: {len(self)}",
            f"Root location: {self.root}",
            f"Layout: {src.describe()}",
            f"Images: {src.width} x {src.height} RGB uint8, latents: {src.raw_dim} columns",
        ]
        if src.class_names:
            body.append(f"Classes: {', '.join(src.class_names)}")
        body += [line for line in self.extra_repr().splitlines() if line]
        if self.transform is not None:
            body.append(f"Transform: {self.transform!r}")
        if self.target_transform is not None:
            body.append(f"Target transform: {self.target_transform!r}")
        return "\n".join([head] + [" " * self._repr_indent + line for line in body])

    # -- statistics and normalisation
    @property
    def mean(self) -> np.ndarray:
        """Per-channel mean (R, G, B) in [0, 1] units: the manifest's exact value for the store,
        an estimate from 256 evenly spaced images for an original folder."""
        return self.source.channel_stats()[0]

    @property
    def std(self) -> np.ndarray:
        """Per-channel standard deviation, in [0, 1] units (see :attr:`mean`)."""
        return self.source.channel_stats()[1]

    def normalizer(
        self, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> Normalize:
        """A :class:`Normalize` module with this dataset's statistics, on ``device``."""
        norm = Normalize(self.mean, self.std, dtype)
        return norm.to(device) if device is not None else norm

    # -- helpers
    def _image_tensor(self, i: int) -> torch.Tensor:
        return _chw(torch.from_numpy(self.source.image(i)))

    def _latents_tensor(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.source.latents()[i].copy())

    def _read_batch(self, indices: Sequence[int]) -> torch.Tensor:
        buf = self._pool.get((len(indices), *self.source.image_shape))
        self.source.read_many_into(indices, buf.numpy())
        return buf

    def loader(self, batch_size: int, **kwargs: Any) -> DataLoader:
        """:func:`make_loader` for this dataset."""
        from ident3d.data.loader import make_loader  # loader knows the datasets

        return make_loader(self, batch_size, **kwargs)
