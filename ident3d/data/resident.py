"""The GPU-resident path: :class:`GPUDataset` holds a whole split on the device as one uint8
tensor and serves batches by index, without a DataLoader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from ident3d.data.buffers import _chw
from ident3d.data.knn import _ClassIndex, _snap
from ident3d.data.knn_pair_dataset import KNNPairDataset
from ident3d.data.normalize import Normalize
from ident3d.data.sampler import EpochSampler
from ident3d.data.sources import _open_source, _Source
from ident3d.errors import UsageError


class GPUDataset:
    """A whole split resident on ``device`` as one uint8 tensor; batches by index, no DataLoader.

    ``mode``: ``"images"`` -> batches ``(x, z)`` (+ class); ``"pairs"`` (pairs datasets) ->
    ``(x, x_tilde, z, z_tilde)`` (+ class); ``"knn"`` -> the :class:`KNNPairDataset` semantics with the
    lookups done on the device (brute force ``addmm`` + ``topk`` over the latent table), and the
    same draws as a ``KNNPairDataset`` with the same seed. Images come out as ``(B, 3, H, W)``
    uint8 views (channels-last memory); ``normalizer()`` turns them into floats.

    250,000 images at 224 x 224 are 37.6 GB: they fit an 80 GB GPU. Works on the CPU too.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | torch.device = "cuda",
        *,
        mode: str | None = None,
        conditional: Any = "normal",
        sigma: float = 0.1,
        seed: int = 0,
        anchor: str = "marginal",
        length: int | None = None,
        space: Any = None,
        chunk: int = 1024,
        allow_incomplete: bool = False,
        **conditional_options: Any,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("device 'cuda' requested but CUDA is not available here.")
        src = _open_source(path, allow_incomplete)
        self.source = src
        self.root = src.root
        if mode is None:
            mode = "pairs" if src.kind == "pairs" else "images"
        if mode not in ("images", "pairs", "knn"):
            raise UsageError(f"mode must be images, pairs or knn, got {mode!r}.")
        if mode == "pairs" and src.kind != "pairs":
            raise UsageError(f"{self.root} holds single images: use mode='knn' or 'images'.")
        if mode in ("images", "knn") and src.kind != "images":
            raise UsageError(f"{self.root} holds pairs: use mode='pairs'.")
        self.mode = mode
        table = src.latents()
        self.images = self._load_images(src, self.device, chunk)
        self.latents = torch.as_tensor(table, device=self.device)
        cls = src.classes()
        self.classes = None if cls is None else torch.as_tensor(cls, device=self.device)
        self._mean, self._std = src.channel_stats()
        self.knn: KNNPairDataset | None = None
        if mode == "knn":
            # The CPU dataset object supplies the draws (identical to KNNPairDataset's); the
            # lookups run on this device.
            self.knn = KNNPairDataset(
                src, conditional, sigma, seed, anchor=anchor, length=length, space=space,
                allow_incomplete=allow_incomplete, **conditional_options,
            )  # fmt: skip
            self._index = _ClassIndex(table, cls, "torch", self.device, 1)
            self._epoch_cache: (
                tuple[int, torch.Tensor, torch.Tensor, torch.Tensor | None] | None
            ) = None

    @staticmethod
    def _load_images(src: _Source, device: torch.device, chunk: int) -> torch.Tensor:
        out = torch.empty((src.n, *src.image_shape), dtype=torch.uint8, device=device)
        pin = device.type == "cuda"
        buf = torch.empty((min(chunk, src.n), *src.image_shape), dtype=torch.uint8, pin_memory=pin)
        for a in range(0, src.n, chunk):
            b = min(src.n, a + chunk)
            part = buf[: b - a]
            src.read_many_into(range(a, b), part.numpy())
            out[a:b].copy_(part, non_blocking=pin)
            if pin:
                torch.cuda.current_stream(device).synchronize()
        return out

    def __len__(self) -> int:
        return self.knn.length if self.knn is not None else self.source.n

    def __repr__(self) -> str:
        gb = self.images.numel() / 1e9
        return (
            f"GPUDataset({str(self.root)!r}, mode={self.mode!r}, n={len(self)}, "
            f"device={self.device}, images {gb:.2f} GB)"
        )

    def normalizer(self, dtype: torch.dtype = torch.float32) -> Normalize:
        return Normalize(self._mean, self._std, dtype).to(self.device)

    def _knn_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            assert self.knn is not None
            z, zt, cls = self.knn._get_draws().epoch(epoch)
            self._epoch_cache = (
                epoch,
                torch.as_tensor(z, dtype=torch.float64, device=self.device),
                torch.as_tensor(zt, dtype=torch.float64, device=self.device),
                None if cls is None else torch.as_tensor(cls, device=self.device),
            )
        return self._epoch_cache[1], self._epoch_cache[2], self._epoch_cache[3]

    def _knn_lookup(self, items: torch.Tensor, epoch: int) -> tuple[torch.Tensor, ...]:
        assert self.knn is not None
        z_all, zt_all, cls_all = self._knn_epoch(epoch)
        z, zt = z_all[items], zt_all[items]
        groups = self._index.groups
        if len(groups) == 1:
            nn = groups[0][2]
            if self.knn.anchor == "stored":
                i = items
            else:
                i = nn.query(z, 1)[1][:, 0]
            j2 = nn.query(zt, 2)[1]
        else:  # classes: per-class lookups (numpy bookkeeping, device distances)
            cls = None if cls_all is None else cls_all[items].cpu().numpy()
            anchor = items.cpu().numpy() if self.knn.anchor == "stored" else None
            i_np, it_np, fb_np = _snap(self._index, z.cpu().numpy(), zt.cpu().numpy(), anchor, cls)
            i = torch.as_tensor(i_np, device=self.device)
            it = torch.as_tensor(it_np, device=self.device)
            return i, it, torch.as_tensor(fb_np, device=self.device), z, zt
        fb = j2[:, 0] == i
        it = torch.where(fb, j2[:, 1], j2[:, 0])
        return i, it, fb, z, zt

    def get_batch(
        self, indices: Sequence[int] | torch.Tensor, epoch: int = 0, return_info: bool = False
    ) -> tuple[Any, ...]:
        """The batch of ``indices`` (one epoch's item numbers), as device tensors."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.device).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"indices out of range for {len(self)} items")
        if self.mode == "images":
            out: tuple[Any, ...] = (_chw(self.images[idx]), self.latents[idx])
            if self.classes is not None:
                out += (self.classes[idx],)
            return out
        if self.mode == "pairs":
            both = _chw(self.images[idx])
            zz = self.latents[idx]
            out = (both[:, 0], both[:, 1], zz[:, 0], zz[:, 1])
            if self.classes is not None:
                out += (self.classes[idx],)
            return out
        i, it, fb, z, zt = self._knn_lookup(idx, epoch)
        zr, ztr = self.latents[i], self.latents[it]
        out = (_chw(self.images[i]), _chw(self.images[it]), zr, ztr)
        if return_info:
            out += ({
                "index": i, "index_tilde": it, "z_sampled": z, "z_tilde_sampled": zt,
                "dist_sampled": (z - zt).norm(dim=1), "dist_retrieved": (zr - ztr).norm(dim=1),
                "snap_z": (zr - z).norm(dim=1), "snap_z_tilde": (ztr - zt).norm(dim=1),
                "second_neighbour": fb,
            },)  # fmt: skip
        return out

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = True,
        epoch: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        return_info: bool = False,
    ) -> Iterator[tuple[Any, ...]]:
        """One epoch of batches; the order is :class:`EpochSampler`'s for ``(seed, epoch)``."""
        if batch_size < 1:
            raise UsageError(f"batch_size must be positive, got {batch_size}.")
        order = torch.as_tensor(
            EpochSampler(len(self), shuffle, seed).order(epoch), device=self.device
        )
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for s in range(0, stop, batch_size):
            yield self.get_batch(order[s : s + batch_size], epoch, return_info)


def load_to_device(
    path: str | os.PathLike[str], device: str | torch.device = "cuda", **kwargs: Any
) -> GPUDataset:
    """Load a whole split onto ``device``: :class:`GPUDataset` (same keyword arguments)."""
    return GPUDataset(path, device, **kwargs)
