"""PyTorch datasets for 3DIdent-style data: images, exact pairs and nearest-neighbour pairs.

User guide: ``docs/data.md``. Summary::

    from ident3d.data import ImageDataset, PairDataset, KNNPairDataset, make_loader

    ds = KNNPairDataset("data/train", conditional="normal", sigma=0.1, seed=0)
    loader = make_loader(ds, batch_size=512, shuffle=True, num_workers=2, seed=0)
    norm = ds.normalizer("cuda")                      # per-channel mean/std, on the device
    for x, x_tilde, z, z_tilde in loader:             # uint8 (B, 3, H, W), float32 (B, D)
        x, x_tilde = norm(x.cuda()), norm(x_tilde.cuda())

- :class:`ImageDataset`: item ``i`` is ``(image, latents)`` (plus the class label where the
  dataset has classes); images are uint8 ``(3, H, W)`` tensors, latents float32 raw units.
- :class:`PairDataset`: datasets rendered as pairs; item ``i`` is ``(x, x_tilde, z, z_tilde)``.
- :class:`KNNPairDataset`: the original 3DIdent workflow on i.i.d. renders. ``z`` is drawn from
  the marginal (uniform on the box), ``z~`` from the conditional (truncated to the box by
  rejection), both are replaced by their nearest stored latent, and when both land on the same
  sample ``z~`` takes its second neighbour. Lookups are batched (``__getitems__``): one query
  per batch, never one per item. ``return_info=True`` adds a dict with the sampled and the
  retrieved distances; :func:`knn_diagnostics` summarises them for a dataset.
- :class:`GPUDataset` / :func:`load_to_device`: a whole split as one uint8 tensor on the
  device, batches served by index with no DataLoader, nearest-neighbour lookups on the device.

Every dataset reads the ident3d store (``manifest.json`` + HDF5 shards) and the original folder
layouts (3DIdent: ``raw_latents.npy`` + ``images/``; Causal3DIdent: ``raw_latents_<c>.npy`` +
``images_<c>/``; exported pairs: ``view0/``, ``view1/`` + ``pairs.json``), the latter by
decoding PNGs (slower).

Workers ship uint8; normalisation with the per-channel statistics happens on the device
(:meth:`normalizer`). Batches are logically ``(B, 3, H, W)`` and stored channels-last (the
on-disk HWC order, copied once into a shared-memory buffer), which is also the layout convolution
kernels prefer on the GPU. HDF5 files are opened lazily inside each process and never pickled,
so ``num_workers > 0`` works under fork and spawn, with ``persistent_workers`` too.

Randomness: kNN draws of epoch ``e`` come from ``SeedSequence(seed, spawn_key=(1, e))`` for the
whole epoch at once (item ``i`` is row ``i``), so an item depends only on ``(seed, epoch, i)``,
never on the worker count, the batch size or the order of the sampler.
"""

from __future__ import annotations

import math
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, get_worker_info
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data._utils.collate import default_collate

from ident3d.errors import DataError, UsageError

__all__ = [
    "LAYOUTS",
    "EpochSampler",
    "GPUDataset",
    "ImageDataset",
    "KNNPairDataset",
    "NearestNeighbours",
    "Normalize",
    "PairDataset",
    "collate",
    "detect_layout",
    "format_knn_diagnostics",
    "knn_diagnostics",
    "load_to_device",
    "make_loader",
    "simulate_knn",
    "summarise_knn",
]

LAYOUTS = ("store", "3dident", "causal3dident", "pairs-folder")
BACKENDS = ("auto", "blocks", "kdtree", "torch")
ANCHORS = ("marginal", "stored")
# Seed-sequence spawn keys: (1, epoch) for kNN draws, (2, epoch) for the sampler's shuffle.
_DRAW_KEY = 1
_SHUFFLE_KEY = 2
# Images sampled (evenly spaced) to estimate channel statistics of an original-layout folder.
_STAT_SAMPLES = 256


# ============================================================================ sources


class _Source(ABC):
    """Uniform read access to one dataset (the store or an original layout).

    ``read_into(i, out)`` writes sample ``i``'s images, uint8 ``(H, W, 3)`` (pairs:
    ``(2, H, W, 3)``), into ``out``; ``latents()`` is the whole raw table, float32 ``(N, D)``
    (pairs ``(N, 2, D)``); ``classes()`` the labels or None.
    """

    layout: str
    root: Path
    kind: str
    n: int
    height: int
    width: int
    raw_dim: int
    has_class: bool
    class_names: list[str] | None

    def __len__(self) -> int:
        return self.n

    @property
    def image_shape(self) -> tuple[int, ...]:
        hw3 = (self.height, self.width, 3)
        return hw3 if self.kind == "images" else (2, *hw3)

    @abstractmethod
    def read_into(self, i: int, out: np.ndarray) -> None:
        """Write sample ``i``'s images into ``out``."""

    @abstractmethod
    def latents(self) -> np.ndarray:
        """The whole raw latent table."""

    @abstractmethod
    def classes(self) -> np.ndarray | None:
        """Class labels ``(N,)`` or None."""

    @abstractmethod
    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and std in [0, 1] units."""

    @abstractmethod
    def describe(self) -> str:
        """One line for ``repr``."""

    def read_many_into(self, indices: Sequence[int], out: np.ndarray) -> None:
        for k, i in enumerate(indices):
            self.read_into(int(i), out[k])

    def image(self, i: int) -> np.ndarray:
        out = np.empty(self.image_shape, np.uint8)
        self.read_into(i, out)
        return out

    def check_index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"sample {i} out of range for a dataset of {self.n}")
        return i


class _StoreSource(_Source):
    layout = "store"

    def __init__(self, root: Path, allow_incomplete: bool) -> None:
        from ident3d.store import open_dataset

        self.root = root
        self.ds = open_dataset(root, allow_incomplete=allow_incomplete)
        self.kind = self.ds.kind
        self.n = len(self.ds)
        self.height, self.width, self.raw_dim = self.ds.height, self.ds.width, self.ds.raw_dim
        self.has_class = self.ds.has_class
        self.class_names = self.ds.class_names
        self._latents: np.ndarray | None = None
        self._classes: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_latents"] = None  # re-read from the shards in the worker: cheaper than pickling
        state["_classes"] = None
        return state

    def read_into(self, i: int, out: np.ndarray) -> None:
        # One HDF5 chunk straight into the caller's buffer (read_direct_chunk for uncompressed
        # shards; the store's reader handles compressed ones).
        self.ds.read_into(self.check_index(i), out)

    def read_many_into(self, indices: Sequence[int], out: np.ndarray) -> None:
        read_into = self.ds.read_into
        for k, i in enumerate(indices):
            read_into(self.check_index(i), out[k])

    def latents(self) -> np.ndarray:
        if self._latents is None:
            self._latents = np.ascontiguousarray(self.ds.raw_latents(), np.float32)
        return self._latents

    def classes(self) -> np.ndarray | None:
        if not self.has_class:
            return None
        if self._classes is None:
            self._classes = np.asarray(self.ds.classes(), np.int64)
        return self._classes

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.ds.mean, np.float64), np.asarray(self.ds.std, np.float64)

    def describe(self) -> str:
        return f"ident3d store, {self.ds.num_shards} shards"


class _FolderSource(_Source):
    """An original-layout folder (3DIdent, Causal3DIdent split, or an exported pairs folder)."""

    def __init__(self, root: Path) -> None:
        from ident3d.store import CAUSAL3DIDENT_CLASSES, scan_original_layout

        self.root = root
        if (root / "pairs.json").is_file():
            self.layout = "pairs-folder"
            self.kind = "pairs"
            views = [scan_original_layout(root / v, None) for v in ("view0", "view1")]
            layouts = {v[0] for v in views}
            parts_by_view = [v[2] for v in views]
        else:
            self.kind = "images"
            layout, _, parts = scan_original_layout(root, None)
            self.layout = layout
            layouts = {layout}
            parts_by_view = [parts]
        # files[v][i]: path of view v of sample i; classes concatenated in class order.
        self._files: list[list[str]] = []
        raws, cls = [], []
        for parts in parts_by_view:
            files: list[str] = []
            for p in parts:
                files.extend(str(p.images_dir / f) for f in p.files)
            self._files.append(files)
            raws.append(np.concatenate([p.raw for p in parts]).astype(np.float32))
            cls.append(np.concatenate([np.full(len(p.raw), p.cls or 0) for p in parts]))
        if len(raws) == 2 and raws[0].shape != raws[1].shape:
            raise DataError(
                f"{root}: view0 has latents {raws[0].shape}, view1 {raws[1].shape}; "
                f"pairs need one row per pair in each."
            )
        self._latents = raws[0] if self.kind == "images" else np.stack(raws, axis=1)
        self.n = len(raws[0])
        self.raw_dim = raws[0].shape[1]
        self.has_class = "causal3dident" in layouts
        self._classes = cls[0].astype(np.int64) if self.has_class else None
        self.class_names = list(CAUSAL3DIDENT_CLASSES) if self.has_class else None
        first = self._decode(self._files[0][0])
        self.height, self.width = first.shape[:2]
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def _decode(path: str) -> np.ndarray:
        from ident3d.store import decode_png

        return decode_png(path)

    def _decode_checked(self, path: str) -> np.ndarray:
        img = self._decode(path)
        if img.shape != (self.height, self.width, 3):
            raise DataError(
                f"{path} is {img.shape[1]} x {img.shape[0]} pixels; the dataset's first image is "
                f"{self.width} x {self.height}."
            )
        return img

    def read_into(self, i: int, out: np.ndarray) -> None:
        i = self.check_index(i)
        if self.kind == "images":
            out[...] = self._decode_checked(self._files[0][i])
        else:
            out[0] = self._decode_checked(self._files[0][i])
            out[1] = self._decode_checked(self._files[1][i])

    def latents(self) -> np.ndarray:
        return self._latents

    def classes(self) -> np.ndarray | None:
        return self._classes

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Estimated from up to 256 evenly spaced images (an original folder has no manifest)."""
        if self._stats is None:
            m = min(self.n, _STAT_SAMPLES)
            idx = np.unique(np.linspace(0, self.n - 1, m).round().astype(np.int64))
            s = np.zeros(3)
            q = np.zeros(3)
            count = 0
            buf = np.empty(self.image_shape, np.uint8)
            for i in idx:
                self.read_into(int(i), buf)
                flat = buf.reshape(-1, 3).astype(np.float64)
                s += flat.sum(0)
                q += (flat * flat).sum(0)
                count += flat.shape[0]
            mean = s / count
            std = np.sqrt(np.maximum(q / count - mean**2, 0.0))
            self._stats = (mean / 255.0, std / 255.0)
        return self._stats

    def describe(self) -> str:
        return f"original {self.layout} layout (PNG files)"


def detect_layout(path: str | os.PathLike[str]) -> str:
    """Which layout a folder holds: one of :data:`LAYOUTS`; :class:`DataError` if none."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"{root} does not exist.")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory (a dataset is a folder).")
    if (root / "manifest.json").is_file():
        return "store"
    if (root / "pairs.json").is_file():
        return "pairs-folder"
    if (root / "raw_latents.npy").is_file():
        return "3dident"
    names = os.listdir(root)
    if any(n.startswith("raw_latents_") and n.endswith(".npy") for n in names):
        return "causal3dident"
    splits = [s for s in ("trainset", "testset") if (root / s).is_dir()]
    if splits:
        raise UsageError(
            f"{root} holds the Causal3DIdent splits {' and '.join(splits)}: pass one of them "
            f"(e.g. {root / splits[0]})."
        )
    raise DataError(
        f"{root} is not a dataset: it has no manifest.json (ident3d store), raw_latents.npy + "
        f"images/ (3DIdent) or raw_latents_<c>.npy + images_<c>/ (Causal3DIdent)."
    )


def _open_source(path: str | os.PathLike[str], allow_incomplete: bool = False) -> _Source:
    if isinstance(path, _Source):
        return path
    layout = detect_layout(path)
    root = Path(path)
    if layout == "store":
        return _StoreSource(root, allow_incomplete)
    return _FolderSource(root)


# ============================================================================ batching helpers


def _empty(shape: tuple[int, ...], dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """A new tensor; in shared memory inside a DataLoader worker (no copy on the way back)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device="cpu")
    return proto.new(storage).resize_(*shape)


class _BufferPool:
    """Reusable batch buffers for reads in the main process (``num_workers=0``).

    A fresh 77 MB batch costs its first-touch page faults on every batch (glibc hands blocks
    over 32 MB straight back to the kernel); measured here, filling a fresh buffer took 5x as
    long as refilling one. A pooled buffer is handed out again only when nothing but the pool
    references its storage any more (torch's storage use count), so a batch the caller still
    holds, or any view or numpy array of it, is never overwritten. Inside DataLoader workers
    batches go to fresh shared memory instead (the main process owns them once sent).
    """

    _KEEP = 3  # buffers kept per shape

    def __init__(self) -> None:
        self._pool: dict[tuple[int, ...], list[tuple[torch.Tensor, int]]] = {}

    @staticmethod
    def _use_count(t: torch.Tensor) -> int | None:
        fn = getattr(torch._C, "_storage_Use_Count", None)
        if fn is None:  # pragma: no cover - older or newer torch without it: no reuse
            return None
        return int(fn(t.untyped_storage()._cdata))

    def get(self, shape: tuple[int, ...]) -> torch.Tensor:
        if get_worker_info() is not None:
            return _empty(shape)
        pool = self._pool.setdefault(shape, [])
        for t, base in pool:
            if self._use_count(t) == base:
                return t
        t = torch.empty(shape, dtype=torch.uint8)
        base = self._use_count(t)
        if base is not None and len(pool) < self._KEEP:
            pool.append((t, base))
        return t


class _Items(Sequence):
    """What ``__getitems__`` returns: a sequence of per-item tuples (so torch's
    ``default_collate`` works on it), backed by ``batch``, the same items already collated,
    which :func:`collate` returns as it is. Items are cut from the batch only when asked for.

    ``scalars``: positions of per-item Python ints (class labels) in an item.
    """

    def __init__(
        self,
        batch: tuple[Any, ...] | None = None,
        items: list[Any] | None = None,
        scalars: tuple[int, ...] = (),
    ) -> None:
        self.batch = batch
        self._items = items
        self._scalars = scalars
        self._n = len(items) if items is not None else len(batch[0])  # type: ignore[index]

    def __len__(self) -> int:
        return self._n

    def _item(self, k: int) -> tuple[Any, ...]:
        assert self.batch is not None
        out = []
        for pos, part in enumerate(self.batch):
            if isinstance(part, dict):
                out.append({key: v[k] for key, v in part.items()})
            elif pos in self._scalars:
                out.append(int(part[k]))
            else:
                out.append(part[k])
        return tuple(out)

    def __getitem__(self, k: Any) -> Any:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(self._n))]
        if self._items is not None:
            return self._items[k]
        if not -self._n <= k < self._n:
            raise IndexError(k)
        return self._item(k % self._n)


def collate(items: list[Any]) -> Any:
    """Collate function for these datasets: a batch built by ``__getitems__`` is returned as
    it is (no second copy); anything else goes through torch's ``default_collate``."""
    if isinstance(items, _Items) and items.batch is not None:
        return items.batch
    return default_collate(items)


def _chw(hwc: torch.Tensor) -> torch.Tensor:
    """``(..., H, W, 3)`` -> ``(..., 3, H, W)`` view (channels-last memory)."""
    return hwc.movedim(-1, -3)


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
    """

    def __init__(
        self,
        n: int,
        shuffle: bool = False,
        seed: int = 0,
        with_epoch: bool = False,
        start_epoch: int = 0,
    ) -> None:
        if n < 0:
            raise UsageError(f"sampler size must be >= 0, got {n}.")
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
        return rng.permutation(self.n)

    def __iter__(self) -> Iterator[Any]:
        epoch = self.epoch
        self.epoch += 1
        order = self.order(epoch).tolist()
        if self.with_epoch:
            return iter([(epoch, i) for i in order])
        return iter(order)

    def __len__(self) -> int:
        return self.n


# ============================================================================ normalisation


class Normalize(torch.nn.Module):
    """uint8 images ``(..., 3, H, W)`` -> ``(x / 255 - mean) / std`` in ``dtype``.

    Apply on the device after the transfer (workers ship uint8, a quarter of the bytes of
    float32). Keeps the memory format (channels-last in, channels-last out).
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(np.asarray(mean, np.float64) * 255.0, dtype=torch.float32)
        std_t = torch.as_tensor(np.asarray(std, np.float64) * 255.0, dtype=torch.float32)
        if mean_t.shape != (3,) or std_t.shape != (3,):
            raise UsageError("mean and std need one value per channel (3).")
        if not torch.isfinite(mean_t).all() or not (std_t > 0).all():
            raise UsageError(
                "the dataset's channel statistics are missing or zero: pass mean and std."
            )
        self.dtype = dtype
        self.register_buffer("mean", mean_t.view(3, 1, 1))
        self.register_buffer("scale", (1.0 / std_t).view(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x.to(torch.float32) - self.mean) * self.scale
        return out.to(self.dtype)

    def extra_repr(self) -> str:
        mean = [round(v / 255.0, 4) for v in self.mean.flatten().tolist()]
        std = [round(1.0 / (v * 255.0), 4) for v in self.scale.flatten().tolist()]
        return f"mean={mean}, std={std}, dtype={self.dtype}"


# ============================================================================ nearest neighbours


# Target points per block of the "blocks" backend (measured: 1,000-2,000 is fastest for a
# 250,000 x 10 table; much smaller blocks cost numpy overhead, much larger ones prune less).
_BLOCK_POINTS = 2000
# Queries answered together by the blocks backend (bounds the (queries x block) scratch).
_BLOCK_QUERIES = 1024


class _Blocks:
    """Exact batched k-nearest-neighbour search: brute force over blocks of the table, skipping
    every block whose bounding box is farther than the current k-th candidate.

    The table is split into ~2,000-point blocks by the top levels of a k-d tree (median splits),
    each with its tight bounding box. A batch of queries first scans its nearest block each,
    then every other block, in order of closeness, for the queries whose box distance can still
    beat their k-th candidate; distances inside a block are one matrix product. Squared
    distances use float32 with a safety margin in the pruning test, and the ``k + 1``
    candidates kept per query are re-ranked in float64, so the answer is exact.
    """

    def __init__(self, table: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        table64 = np.ascontiguousarray(table, np.float64)
        n = len(table64)
        depth = max(0, round(math.log2(max(n / _BLOCK_POINTS, 1.0))))
        tree = cKDTree(table64, leafsize=16)
        ranges: list[tuple[int, int]] = []
        stack = [(tree.tree, 0)]
        while stack:
            node, d = stack.pop()
            if d >= depth or node.lesser is None:
                ranges.append((int(node.start_idx), int(node.end_idx)))
                continue
            stack.append((node.greater, d + 1))
            stack.append((node.lesser, d + 1))
        ranges.sort()
        self.perm = np.asarray(tree.indices, np.int64)
        self.points64 = table64[self.perm]
        self.points = self.points64.astype(np.float32)
        self.sqnorm = (self.points64**2).sum(1).astype(np.float32)
        self.ranges = ranges
        self.lo = np.stack([self.points[a:b].min(0) for a, b in ranges])
        self.hi = np.stack([self.points[a:b].max(0) for a, b in ranges])
        # -2 x block^T per block, so a block's distances are one matmul and one add.
        self.blocks_t = [np.ascontiguousarray(-2.0 * self.points[a:b].T) for a, b in ranges]

    def query(self, q64: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist = np.empty((len(q64), k))
        idx = np.empty((len(q64), k), np.int64)
        for s in range(0, len(q64), _BLOCK_QUERIES):
            d, i = self._query(q64[s : s + _BLOCK_QUERIES], k)
            dist[s : s + len(d)], idx[s : s + len(d)] = d, i
        return dist, idx

    def _query(self, q64: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        m, n = len(q64), len(self.points)
        kc = min(k + 1, n)  # one spare candidate for the float64 re-rank
        q = q64.astype(np.float32)
        qn = (q64**2).sum(1).astype(np.float32)
        gap = np.maximum(0.0, np.maximum(self.lo[None] - q[:, None], q[:, None] - self.hi[None]))
        # (m, blocks) squared box distances, less |q|^2: the candidates' values below leave out
        # |q|^2 too (it does not change a query's ranking), which saves a pass per block.
        lb = (gap * gap).sum(2) - qn[:, None]
        best = np.full((m, kc), np.inf, np.float32)
        bidx = np.zeros((m, kc), np.int64)

        def scan(c: int, sel: np.ndarray) -> None:
            a, b = self.ranges[c]
            d = q[sel] @ self.blocks_t[c]
            d += self.sqnorm[a:b]
            rows = np.arange(len(sel))
            vals, ids = [], []
            for _ in range(min(kc, b - a)):
                j = d.argmin(1)
                vals.append(d[rows, j])
                ids.append(j + a)
                d[rows, j] = np.inf
            allv = np.concatenate([best[sel], np.stack(vals, 1)], 1)
            alli = np.concatenate([bidx[sel], np.stack(ids, 1)], 1)
            order = np.argsort(allv, axis=1, kind="stable")[:, :kc]
            best[sel] = np.take_along_axis(allv, order, 1)
            bidx[sel] = np.take_along_axis(alli, order, 1)

        first = lb.argmin(1)
        for c in np.unique(first):
            scan(int(c), np.flatnonzero(first == c))
        visited = np.zeros(lb.shape, bool)
        visited[np.arange(m), first] = True
        margin = 1e-5 * (1.0 + 2.0 * qn)  # float32 rounding of the squared distances
        for c in np.argsort(lb.mean(0), kind="stable"):
            sel = np.flatnonzero((lb[:, c] <= best[:, k - 1] + margin) & ~visited[:, c])
            if sel.size:
                scan(int(c), sel)
        # Exact re-rank of the candidates in float64; ties broken by the table row.
        rows = self.perm[bidx]
        exact = ((self.points64[bidx] - q64[:, None, :]) ** 2).sum(2)
        order = np.lexsort((rows, exact), axis=1)[:, :k]
        dist = np.sqrt(np.take_along_axis(exact, order, 1))
        return dist, np.take_along_axis(rows, order, 1)


class NearestNeighbours:
    """Exact Euclidean nearest neighbours of query points in a fixed latent table.

    ``backend="blocks"`` (CPU, the default there): batched brute force over blocks of the table
    with bounding-box pruning (:class:`_Blocks`), several times faster per core than a k-d tree
    on 250,000 x 10 uniform latents. ``backend="kdtree"``: scipy's cKDTree on the CPU (queries
    sorted for cache locality, answers returned in query order). ``backend="torch"``: brute
    force with ``addmm`` + ``topk`` on ``device`` (the GPU path; also runs on the CPU), whose
    candidates are re-ranked with exact distances. ``"auto"`` picks torch on CUDA devices and
    blocks otherwise. The index is built lazily in the process that first queries it and is
    never pickled.
    """

    def __init__(
        self,
        table: np.ndarray | torch.Tensor,
        backend: str = "auto",
        device: str | torch.device | None = None,
        threads: int = 1,
    ) -> None:
        if backend not in BACKENDS:
            raise UsageError(
                f"unknown nearest-neighbour backend {backend!r} ({', '.join(BACKENDS)})."
            )
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if backend == "auto":
            backend = "torch" if dev.type != "cpu" else "blocks"
        if isinstance(table, torch.Tensor):
            table_np = table.detach().cpu().numpy() if backend != "torch" else None
            self._table_t: torch.Tensor | None = table.detach().to(dev, torch.float32)
        else:
            table_np = np.asarray(table)
            self._table_t = None
        if table_np is not None:
            table_np = np.ascontiguousarray(table_np, np.float64)
        n = len(table_np) if table_np is not None else len(self._table_t)  # type: ignore[arg-type]
        if n < 1:
            raise DataError("the latent table is empty: nothing to look up.")
        self.backend, self.device, self.threads = backend, dev, int(threads)
        self._table = table_np
        self._tree: Any = None
        self._sqnorm: torch.Tensor | None = None
        self.n = n

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_tree"] = None
        state["_sqnorm"] = None
        return state

    def __len__(self) -> int:
        return self.n

    def _torch_table(self) -> torch.Tensor:
        if self._table_t is None:
            self._table_t = torch.as_tensor(self._table, dtype=torch.float32, device=self.device)
        if self._sqnorm is None:
            self._sqnorm = (self._table_t.double() ** 2).sum(1).float()
        return self._table_t

    def query(self, points: np.ndarray | torch.Tensor, k: int = 1) -> tuple[Any, Any]:
        """Distances and indices of the ``k`` nearest stored rows, each ``(m, k)``, nearest first.

        The CPU backends (blocks, kdtree) return numpy arrays; the torch backend returns
        tensors on its device.
        """
        k = int(k)
        if not 1 <= k <= self.n:
            raise UsageError(f"k must be between 1 and {self.n}, got {k}.")
        if self.backend == "kdtree":
            return self._query_kdtree(points, k)
        if self.backend == "blocks":
            if self._tree is None:
                self._tree = _Blocks(self._table)
            q = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else points
            q = np.ascontiguousarray(q, np.float64).reshape(-1, self._table.shape[1])
            return self._tree.query(q, k)
        return self._query_torch(points, k)

    def _query_kdtree(self, points: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(self._table)
        q = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else points
        q = np.ascontiguousarray(q, np.float64).reshape(-1, self._table.shape[1])
        if len(q) == 0:
            return np.empty((0, k)), np.empty((0, k), np.int64)
        # Queries close in space visit the same tree nodes: answering them in a spatial order
        # keeps those nodes in cache (the answers are put back in query order).
        order = np.lexsort(q[:, :3].T[::-1]) if len(q) > 64 else None
        qq = q[order] if order is not None else q
        dist, idx = self._tree.query(qq, k=k, workers=self.threads)
        dist = np.asarray(dist).reshape(len(q), k)
        idx = np.asarray(idx, np.int64).reshape(len(q), k)
        if order is not None:
            d2, i2 = np.empty_like(dist), np.empty_like(idx)
            d2[order], i2[order] = dist, idx
            dist, idx = d2, i2
        return dist, idx

    def _query_torch(self, points: Any, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        table = self._torch_table()
        assert self._sqnorm is not None
        q64 = torch.as_tensor(points).to(self.device, torch.float64).reshape(-1, table.shape[1])
        q = q64.float()
        kk = min(self.n, k + 4)  # spare candidates absorb float32 rounding of the norm trick
        # At most 64 Mi distances in flight on the CPU, 256 Mi (1 GiB) on a GPU.
        budget = 1 << (28 if self.device.type == "cuda" else 26)
        chunk = max(1, budget // self.n)
        dists, idxs = [], []
        for s in range(0, len(q), chunk):
            qc = q[s : s + chunk]
            d2 = torch.addmm(self._sqnorm, qc, table.T, beta=1.0, alpha=-2.0)
            cand = torch.topk(d2, kk, dim=1, largest=False).indices
            exact = ((table[cand].double() - q64[s : s + chunk, None, :]) ** 2).sum(-1)
            ex_sorted, order = torch.sort(exact, dim=1, stable=True)
            idxs.append(torch.gather(cand, 1, order[:, :k]))
            dists.append(ex_sorted[:, :k].sqrt().float())
        if not dists:
            return torch.empty((0, k), device=self.device), torch.empty(
                (0, k), dtype=torch.long, device=self.device
            )
        return torch.cat(dists), torch.cat(idxs)


class _ClassIndex:
    """One :class:`NearestNeighbours` per class (lookups stay within the anchor's class, as
    in the Causal3DIdent loader), answering with global row numbers."""

    def __init__(
        self,
        table: np.ndarray,
        classes: np.ndarray | None,
        backend: str,
        device: torch.device | str | None,
        threads: int,
    ) -> None:
        if classes is None:
            self.groups = [(None, None, NearestNeighbours(table, backend, device, threads))]
        else:
            self.groups = []
            for c in np.unique(classes):
                rows = np.flatnonzero(classes == c)
                self.groups.append(
                    (int(c), rows, NearestNeighbours(table[rows], backend, device, threads))
                )
        self.backend = self.groups[0][2].backend

    def query(
        self, points: np.ndarray, k: int, cls: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """numpy ``(m, k)`` distances and global indices (any backend)."""
        m = len(points)
        dist = np.empty((m, k))
        idx = np.empty((m, k), np.int64)
        for c, rows, nn in self.groups:
            sel = np.arange(m) if c is None else np.flatnonzero(cls == c)
            if sel.size == 0:
                continue
            kk = min(k, nn.n)
            d, i = nn.query(points[sel], kk)
            if isinstance(d, torch.Tensor):
                d, i = d.cpu().numpy(), i.cpu().numpy()
            if kk < k:  # a class with a single stored sample: repeat it
                d = np.concatenate([d, np.repeat(d[:, -1:], k - kk, 1)], 1)
                i = np.concatenate([i, np.repeat(i[:, -1:], k - kk, 1)], 1)
            dist[sel] = d
            idx[sel] = i if rows is None else rows[i]
        return dist, idx


def _snap(
    index: _ClassIndex,
    z: np.ndarray,
    zt: np.ndarray,
    anchor_idx: np.ndarray | None,
    cls: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The original rule, batched: ``i`` = nearest stored latent of ``z`` (or the given anchor),
    ``i~`` = nearest of ``z~``, or its second neighbour when that is ``i``.

    Returns ``(i, i~, fallback)``.
    """
    if anchor_idx is None:
        # z and z~ in one batched query (k=2 for both; z uses its first neighbour).
        both_cls = None if cls is None else np.concatenate([cls, cls])
        _, j = index.query(np.concatenate([z, zt]), 2, both_cls)
        i, j2 = j[: len(z), 0], j[len(z) :]
    else:
        i = np.asarray(anchor_idx, np.int64)
        _, j2 = index.query(zt, 2, cls)
    fallback = j2[:, 0] == i
    it = np.where(fallback, j2[:, 1], j2[:, 0])
    return i, it, fallback


def _make_conditional(conditional: Any, dim: int, sigma: float, **kwargs: Any) -> Any:
    from ident3d import latents as L

    if isinstance(conditional, str):
        cond = L.make_conditional(conditional, dim=dim, sigma=sigma, **kwargs)
        if cond is None:
            raise UsageError("KNNPairDataset needs a conditional; 'none' draws no pairs.")
        return cond
    if kwargs:
        raise UsageError("conditional options apply only when the conditional is given by name.")
    if not hasattr(conditional, "sample"):
        raise UsageError(
            f"conditional must be a name or a conditional object, got {conditional!r}."
        )
    return conditional


class _KNNDraws:
    """The sampled latents of every epoch: ``z`` from the marginal (or the stored anchor),
    ``z~`` from the conditional, class labels; a function of ``(seed, epoch)`` only."""

    def __init__(
        self,
        table: np.ndarray,
        classes: np.ndarray | None,
        length: int,
        space: Any,
        marginal: Any,
        conditional: Any,
        seed: int,
        anchor: str,
    ) -> None:
        self.table, self.classes, self.length = table, classes, int(length)
        self.space, self.marginal, self.conditional = space, marginal, conditional
        self.seed, self.anchor = int(seed), anchor
        self._cache: tuple[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if self._cache is not None and self._cache[0] == e:
            return self._cache[1]
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(_DRAW_KEY, e)))
        n = self.length
        if self.anchor == "stored":
            z = self.table.astype(np.float64)
            cls = self.classes
        else:
            z = self.marginal.sample(self.space, n, rng)
            # The class of a marginal draw: proportional to how many images each class has.
            cls = (
                None
                if self.classes is None
                else self.classes[rng.integers(0, len(self.classes), n)]
            )
        zt = self.conditional.sample(z, self.space, rng)
        out = (z, zt, cls)
        self._cache = (e, out)
        return out


def _knn_info(
    table: np.ndarray,
    z: np.ndarray,
    zt: np.ndarray,
    i: np.ndarray,
    it: np.ndarray,
    fallback: np.ndarray,
) -> dict[str, np.ndarray]:
    zr, ztr = table[i].astype(np.float64), table[it].astype(np.float64)
    return {
        "index": i,
        "index_tilde": it,
        "z_sampled": z.astype(np.float32),
        "z_tilde_sampled": zt.astype(np.float32),
        "dist_sampled": np.linalg.norm(z - zt, axis=1).astype(np.float32),
        "dist_retrieved": np.linalg.norm(zr - ztr, axis=1).astype(np.float32),
        "snap_z": np.linalg.norm(zr - z, axis=1).astype(np.float32),
        "snap_z_tilde": np.linalg.norm(ztr - zt, axis=1).astype(np.float32),
        "second_neighbour": fallback,
    }


def summarise_knn(info: dict[str, Any]) -> dict[str, float]:
    """Summary of kNN pair draws (``info`` dicts as :class:`KNNPairDataset` returns them,
    per item or per batch, concatenated): how far the retrieved pairs are from the sampled ones."""

    def arr(key: str) -> np.ndarray:
        v = info[key]
        return (v.cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)).reshape(-1)

    ds, dr = arr("dist_sampled").astype(np.float64), arr("dist_retrieved").astype(np.float64)
    fb = arr("second_neighbour").astype(bool)
    out = {
        "pairs": int(ds.size),
        "sampled_distance_mean": float(ds.mean()),
        "sampled_distance_median": float(np.median(ds)),
        "retrieved_distance_mean": float(dr.mean()),
        "retrieved_distance_median": float(np.median(dr)),
        "distance_ratio": float(dr.mean() / ds.mean()) if ds.mean() > 0 else float("nan"),
        "second_neighbour_fraction": float(fb.mean()),
    }
    if "snap_z" in info:
        out["snap_distance_mean"] = float(
            np.concatenate([arr("snap_z"), arr("snap_z_tilde")]).astype(np.float64).mean()
        )
    return out


# ============================================================================ datasets


class _Base(TorchDataset):
    """Shared machinery: the source, transforms, repr, statistics, loaders."""

    _repr_indent = 4

    def __init__(
        self,
        path: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        allow_incomplete: bool = False,
    ) -> None:
        if path is None or (isinstance(path, str) and not path):
            raise UsageError("a dataset path is required.")
        self.source = _open_source(path, allow_incomplete)
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
        return make_loader(self, batch_size, **kwargs)


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
    ) -> None:
        super().__init__(path, transform, target_transform, allow_incomplete)
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
        idx = [self.source.check_index(_split_index(i)[1]) for i in indices]
        if self.transform is not None or self.target_transform is not None:
            return _Items(items=[self[i] for i in idx])
        images = _chw(self._read_batch(idx))
        z = torch.from_numpy(self.source.latents()[idx])
        cls = self.source.classes()
        if cls is None:
            return _Items((images, z))
        return _Items((images, z, torch.from_numpy(cls[idx])), scalars=(2,))


class PairDataset(_Base):
    """Exact positive pairs of a pairs dataset: item ``i`` is ``(x, x_tilde, z, z_tilde)``.

    ``transform`` applies to each view, ``target_transform`` to each latent vector.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        allow_incomplete: bool = False,
    ) -> None:
        super().__init__(path, transform, target_transform, allow_incomplete)
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
        return x, xt, z, zt

    def __getitems__(self, indices: Sequence[Any]) -> list[Any]:
        idx = [self.source.check_index(_split_index(i)[1]) for i in indices]
        if self.transform is not None or self.target_transform is not None:
            return _Items(items=[self[i] for i in idx])
        both = _chw(self._read_batch(idx))  # (B, 2, 3, H, W)
        zz = torch.from_numpy(self.source.latents()[idx])  # (B, 2, D)
        return _Items((both[:, 0], both[:, 1], zz[:, 0], zz[:, 1]))


class KNNPairDataset(_Base):
    """3DIdent-style positive pairs formed by nearest-neighbour lookups on i.i.d. renders.

    For item ``i`` of epoch ``e``: ``z`` is drawn from the marginal (uniform on ``space``,
    default the box ``[-1, 1]^raw_dim``), ``z~`` from ``conditional`` around it (truncated to
    the box by rejection), both are replaced by their nearest stored latent, and ``z~`` takes
    its second neighbour when both land on the same sample (the original loader's rule). The
    item is ``(x, x_tilde, z, z_tilde)`` with the *stored* latents of the two images; with
    ``return_info=True`` a fifth element is a dict with the item number and epoch, the stored
    indices of both images, the sampled latents, the sampled and retrieved distances and the
    fallback flag (see :func:`summarise_knn`).

    ``anchor="stored"`` instead takes ``z`` as stored sample ``i`` itself (an epoch visits every
    stored image once as the anchor) and snaps only ``z~``. In datasets with classes, lookups
    stay within the anchor's class. ``length`` is the number of items per epoch (default: the
    number of stored samples).

    Lookups are batched: a DataLoader with ``batch_size`` calls :meth:`__getitems__` once per
    batch, which queries the whole batch at once (exact; ``backend``: ``"blocks"``, the CPU
    default, ``"kdtree"`` or ``"torch"``, see :class:`NearestNeighbours`). The epoch comes from :class:`EpochSampler` indices ``(epoch,
    i)`` (use :func:`make_loader`) or, for plain integer indices, from :meth:`set_epoch`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        conditional: Any = "normal",
        sigma: float = 0.1,
        seed: int = 0,
        *,
        anchor: str = "marginal",
        length: int | None = None,
        space: Any = None,
        marginal: Any = None,
        backend: str = "auto",
        lookup_threads: int = 1,
        return_info: bool = False,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        allow_incomplete: bool = False,
        **conditional_options: Any,
    ) -> None:
        super().__init__(path, transform, target_transform, allow_incomplete)
        if self.source.kind != "images":
            raise UsageError(
                f"{self.root} holds rendered pairs: use PairDataset for its exact pairs "
                f"(KNNPairDataset forms pairs from i.i.d. images)."
            )
        if anchor not in ANCHORS:
            raise UsageError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}.")
        from ident3d import latents as L

        dim = self.source.raw_dim
        self.space = space if space is not None else L.Box(dim)
        if getattr(self.space, "dim", None) != dim:
            raise UsageError(f"the latent space has dimension {self.space.dim}; the dataset {dim}.")
        self.marginal = marginal if marginal is not None else L.Uniform()
        self.conditional = _make_conditional(conditional, dim, sigma, **conditional_options)
        if length is None:
            length = self.source.n
        if anchor == "stored" and length != self.source.n:
            raise UsageError("anchor='stored' visits every stored sample once: leave length unset.")
        if int(length) < 1:
            raise UsageError(f"length must be positive, got {length}.")
        self.length = int(length)
        self.seed = int(seed)
        self.anchor = anchor
        self.backend = backend
        self.lookup_threads = int(lookup_threads)
        self.return_info = bool(return_info)
        self.epoch = 0
        self._draws: _KNNDraws | None = None
        self._index: _ClassIndex | None = None
        if backend not in BACKENDS:
            raise UsageError(
                f"unknown nearest-neighbour backend {backend!r} ({', '.join(BACKENDS)})."
            )

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_draws"] = None  # rebuilt in each worker (the index is never pickled)
        state["_index"] = None
        return state

    def __len__(self) -> int:
        return self.length

    def extra_repr(self) -> str:
        cond = (
            self.conditional.to_config()
            if hasattr(self.conditional, "to_config")
            else self.conditional
        )
        return (
            f"Pairs: nearest-neighbour ({self.anchor} anchor), conditional {cond}, seed {self.seed}\n"
            f"Lookups: batched, {self.backend}"
        )

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for plain integer indices (indices ``(epoch, i)`` carry their own)."""
        self.epoch = int(epoch)

    def _get_draws(self) -> _KNNDraws:
        if self._draws is None:
            self._draws = _KNNDraws(
                self.source.latents(), self.source.classes(), self.length, self.space,
                self.marginal, self.conditional, self.seed, self.anchor,
            )  # fmt: skip
        return self._draws

    def _machinery(self) -> tuple[_KNNDraws, _ClassIndex]:
        if self._index is None:
            self._index = _ClassIndex(
                self.source.latents(), self.source.classes(), self.backend, None,
                self.lookup_threads,
            )  # fmt: skip
        return self._get_draws(), self._index

    def lookup(self, indices: Sequence[Any]) -> dict[str, np.ndarray]:
        """The pair of each item (no images read): a dict of numpy arrays as in the info dict."""
        draws, index = self._machinery()
        parsed = [_split_index(i) for i in indices]
        items = np.array([i for _, i in parsed], np.int64)
        if ((items < 0) | (items >= self.length)).any():
            bad = int(items[(items < 0) | (items >= self.length)][0])
            raise IndexError(f"item {bad} out of range for an epoch of {self.length}")
        epochs = np.array([self.epoch if e is None else e for e, _ in parsed], np.int64)
        n = len(items)
        z = np.empty((n, self.source.raw_dim))
        zt = np.empty_like(z)
        cls = None if self.source.classes() is None else np.empty(n, np.int64)
        for e in np.unique(epochs):
            sel = np.flatnonzero(epochs == e)
            ze, zte, ce = draws.epoch(int(e))
            z[sel], zt[sel] = ze[items[sel]], zte[items[sel]]
            if cls is not None:
                cls[sel] = ce[items[sel]]
        anchor_idx = items if self.anchor == "stored" else None
        i, it, fb = _snap(index, z, zt, anchor_idx, cls)
        info = _knn_info(self.source.latents(), z, zt, i, it, fb)
        info["epoch"] = epochs
        info["item"] = items
        if cls is not None:
            info["class"] = cls
        return info

    def __getitem__(self, index: Any) -> tuple[Any, ...]:
        items = self.__getitems__([index])
        return tuple(items[0])

    def __getitems__(self, indices: Sequence[Any]) -> list[Any]:
        info = self.lookup(indices)
        i, it = info["index"], info["index_tilde"]
        table = self.source.latents()
        z, zt = torch.from_numpy(table[i]), torch.from_numpy(table[it])
        info_t = {k: torch.from_numpy(np.asarray(v)) for k, v in info.items()}
        if self.transform is not None or self.target_transform is not None:
            out = []
            for k in range(len(i)):
                x: Any = self._image_tensor(int(i[k]))
                xt: Any = self._image_tensor(int(it[k]))
                a: Any = z[k]
                b: Any = zt[k]
                if self.transform is not None:
                    x, xt = self.transform(x), self.transform(xt)
                if self.target_transform is not None:
                    a, b = self.target_transform(a), self.target_transform(b)
                item = (x, xt, a, b)
                if self.return_info:
                    item += ({key: v[k] for key, v in info_t.items()},)
                out.append(item)
            return _Items(items=out)
        x = _chw(self._read_batch(i.tolist()))
        xt = _chw(self._read_batch(it.tolist()))
        if self.return_info:
            return _Items((x, xt, z, zt, info_t))
        return _Items((x, xt, z, zt))

    def diagnostics(
        self, n_pairs: int = 10_000, epoch: int = 0, batch_size: int = 4096
    ) -> dict[str, Any]:
        """Summary (:func:`summarise_knn`) of the first ``n_pairs`` items of ``epoch``."""
        n_pairs = min(int(n_pairs), self.length)
        if n_pairs < 1:
            raise UsageError(f"n_pairs must be positive, got {n_pairs}.")
        parts: list[dict[str, np.ndarray]] = []
        t0 = time.perf_counter()
        for s in range(0, n_pairs, batch_size):
            parts.append(self.lookup([(epoch, i) for i in range(s, min(n_pairs, s + batch_size))]))
        seconds = time.perf_counter() - t0
        merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        out: dict[str, Any] = {
            "dataset": str(self.root),
            "stored": self.source.n,
            "dim": self.source.raw_dim,
            "conditional": self.conditional.to_config()
            if hasattr(self.conditional, "to_config")
            else repr(self.conditional),
            "anchor": self.anchor,
            "seed": self.seed,
            "epoch": int(epoch),
        }
        out.update(summarise_knn(merged))
        out["lookups_per_second"] = n_pairs / seconds if seconds > 0 else float("inf")
        return out


# ============================================================================ loaders


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
) -> DataLoader:
    """A standard ``DataLoader`` set up for these datasets.

    It uses an :class:`EpochSampler` (seeded shuffling, reshuffled per epoch; for kNN datasets
    it also carries the epoch into the workers) and :func:`collate`, which takes the batches
    that ``__getitems__`` builds in shared memory as they are. Each epoch (each ``iter()``)
    gives every index exactly once.
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


# ============================================================================ GPU-resident path


class GPUDataset:
    """A whole split resident on ``device`` as one uint8 tensor; batches by index, no DataLoader.

    ``mode``: ``"images"`` -> batches ``(x, z)`` (+ class); ``"pairs"`` (pairs datasets) ->
    ``(x, x_tilde, z, z_tilde)``; ``"knn"`` -> the :class:`KNNPairDataset` semantics with the
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
            return both[:, 0], both[:, 1], zz[:, 0], zz[:, 1]
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


# ============================================================================ diagnostics


def knn_diagnostics(
    path: str | os.PathLike[str],
    conditional: str = "normal",
    sigma: float = 0.1,
    n_pairs: int = 10_000,
    seed: int = 0,
    anchor: str = "marginal",
    **conditional_options: Any,
) -> dict[str, Any]:
    """How far 3DIdent-style nearest-neighbour pairs of a dataset are from the sampled pairs.

    Draws ``n_pairs`` pairs as :class:`KNNPairDataset` does (no images are read) and returns a
    dict: ``sampled_distance_mean``/``_median`` (the nominal conditional),
    ``retrieved_distance_mean``/``_median`` (the pairs training actually sees), their
    ``distance_ratio``, ``second_neighbour_fraction`` and ``snap_distance_mean`` (how far each
    draw moved to reach a stored latent), plus the setup.
    """
    src = _open_source(path)
    if src.kind == "pairs":
        raise UsageError(
            f"{path} holds rendered pairs, which are exact: kNN diagnostics apply to datasets "
            f"of single images (use PairDataset for these pairs)."
        )
    layout = src.layout
    ds = KNNPairDataset(src, conditional, sigma, seed, anchor=anchor, **conditional_options)
    out = ds.diagnostics(n_pairs=n_pairs)
    out["layout"] = layout
    return out


def simulate_knn(
    n_stored: int = 250_000,
    dim: int = 10,
    n_pairs: int = 10_000,
    conditional: str = "normal",
    sigma: float = 0.1,
    seed: int = 0,
    backend: str = "auto",
    **conditional_options: Any,
) -> dict[str, Any]:
    """:func:`knn_diagnostics` for a synthetic dataset of ``n_stored`` latents uniform on
    ``[-1, 1]^dim`` (the original 3DIdent setting: 250,000 in 10-D)."""
    from ident3d import latents as L

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    table = rng.uniform(-1.0, 1.0, (n_stored, dim)).astype(np.float32)
    space = L.Box(dim)
    cond = _make_conditional(conditional, dim, sigma, **conditional_options)
    draws = _KNNDraws(table, None, n_pairs, space, L.Uniform(), cond, seed, "marginal")
    index = _ClassIndex(table, None, backend, None, 1)
    z, zt, _ = draws.epoch(0)
    t0 = time.perf_counter()
    i, it, fb = _snap(index, z, zt, None, None)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "stored": n_stored,
        "dim": dim,
        "conditional": cond.to_config(),
        "anchor": "marginal",
        "seed": seed,
    }
    out.update(summarise_knn(_knn_info(table, z, zt, i, it, fb)))
    out["lookups_per_second"] = n_pairs / seconds if seconds > 0 else float("inf")
    return out


def format_knn_diagnostics(d: dict[str, Any]) -> str:
    """Human lines for a :func:`knn_diagnostics` result (what ``ident3d info
    --knn-diagnostics`` prints)."""
    cond = d.get("conditional")
    if isinstance(cond, dict):
        params = ", ".join(f"{k} {v}" for k, v in cond.items() if k != "type")
        cond = f"{cond.get('type')} conditional ({params})"
    return "\n".join(
        [
            f"kNN pairs    {cond}, {d['pairs']:,} draws, seed {d['seed']}, "
            f"{d['anchor']} anchor, {d['stored']:,} stored latents in {d['dim']}-D",
            f"  sampled    mean distance {d['sampled_distance_mean']:.3f} "
            f"(median {d['sampled_distance_median']:.3f}): the nominal conditional",
            f"  retrieved  mean distance {d['retrieved_distance_mean']:.3f} "
            f"(median {d['retrieved_distance_median']:.3f}): the pairs training sees, "
            f"{d['distance_ratio']:.2f}x the sampled distance",
            f"  fallback   {100 * d['second_neighbour_fraction']:.1f}% of pairs: z and z~ snapped "
            f"to the same image, z~ took its second neighbour",
            f"  snapping   a draw moves {d.get('snap_distance_mean', float('nan')):.3f} on average "
            f"to reach a stored latent",
        ]
    )
