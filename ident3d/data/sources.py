"""Sources: uniform read access to one dataset, the ident3d store or an original folder
layout (3DIdent, Causal3DIdent, pairs folder); :func:`detect_layout` says which layout a folder holds.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError

LAYOUTS = ("store", "3dident", "causal3dident", "pairs-folder")


# Images sampled (evenly spaced) to estimate channel statistics of an original-layout folder.
_STAT_SAMPLES = 256


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

    def check_indices(self, indices: Sequence[Any]) -> np.ndarray:
        """Sample indices of a batch (``i`` or ``(epoch, i)`` each) as int64, range-checked and
        with negative ones counted from the end; vectorised for plain integers."""
        from ident3d.data.sampler import _split_index

        try:
            idx = np.asarray(indices, dtype=np.int64)
        except (TypeError, ValueError):
            idx = np.empty(0)
        if idx.ndim != 1 or len(idx) != len(indices):
            return np.array([self.check_index(_split_index(i)[1]) for i in indices], np.int64)
        bad = (idx < -self.n) | (idx >= self.n)
        if bad.any():
            self.check_index(int(idx[np.flatnonzero(bad)[0]]))  # raises the IndexError
        return np.where(idx < 0, idx + self.n, idx)

    def check_index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"sample {i} out of range for a dataset of {self.n}")
        return i


class _StoreSource(_Source):
    layout = "store"

    def __init__(self, root: Path, allow_incomplete: bool, memory_map: bool = True) -> None:
        from ident3d.data.gather import MappedReader
        from ident3d.store import open_dataset

        self.root = root
        self.ds = open_dataset(root, allow_incomplete=allow_incomplete)
        # Uncompressed shards are copied straight out of their memory maps; compressed ones
        # (and every shard with memory_map=False) go through the store's HDF5 reader.
        self.mapped = MappedReader(self.ds) if memory_map else None
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
        if self.mapped is not None:
            self.mapped.read_into(self.check_index(i), out)
        else:
            # One HDF5 chunk straight into the caller's buffer (read_direct_chunk for
            # uncompressed shards; the store's reader handles compressed ones).
            self.ds.read_into(self.check_index(i), out)

    def read_many_into(self, indices: Sequence[int], out: np.ndarray) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n):
            idx = np.array([self.check_index(int(i)) for i in idx], dtype=np.int64)
        if self.mapped is not None:
            self.mapped.read_many_into(idx, out)
            return
        read_into = self.ds.read_into
        for k, i in enumerate(idx.tolist()):
            read_into(i, out[k])

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
        how = ", memory-mapped reads" if self.mapped is not None else ""
        return f"ident3d store, {self.ds.num_shards} shards{how}"


class _FolderSource(_Source):
    """An original-layout folder (3DIdent, Causal3DIdent split, or an exported pairs folder)."""

    def __init__(self, root: Path) -> None:
        from ident3d.store import read_class_names, scan_original_layout

        self.root = root
        if (root / "pairs.json").is_file():
            self.layout = "pairs-folder"
            self.kind = "pairs"
            views = [scan_original_layout(root / v, None) for v in ("view0", "view1")]
            bases = [v[1] for v in views]
            layouts = {v[0] for v in views}
            parts_by_view = [v[2] for v in views]
        else:
            self.kind = "images"
            layout, base, parts = scan_original_layout(root, None)
            bases = [base]
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
        # the names an ident3d export wrote beside the class files, else Causal3DIdent's own
        self.class_names = read_class_names(Path(bases[0])) if self.has_class else None
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


def _open_source(
    path: str | os.PathLike[str], allow_incomplete: bool = False, memory_map: bool = True
) -> _Source:
    if isinstance(path, _Source):
        return path
    layout = detect_layout(path)
    root = Path(path)
    if layout == "store":
        return _StoreSource(root, allow_incomplete, memory_map)
    return _FolderSource(root)
