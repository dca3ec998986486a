"""The kNN-pairs dataset: 3DIdent-style positive pairs formed by nearest-neighbour lookups on
i.i.d. renders, with the per-epoch draws (a function of ``(seed, epoch)`` only) and their
summary statistics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ident3d.data.buffers import _chw, _Items
from ident3d.data.dataset_base import _Base
from ident3d.data.knn import BACKENDS, _ClassIndex, _snap
from ident3d.data.sampler import _split_index
from ident3d.errors import UsageError

ANCHORS = ("marginal", "stored")
# Seed-sequence spawn key (1, epoch) for kNN draws; the sampler's shuffle uses (2, epoch)
# (ident3d.data.sampler._SHUFFLE_KEY).
_DRAW_KEY = 1


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
        memory_map: bool = True,
        **conditional_options: Any,
    ) -> None:
        super().__init__(path, transform, target_transform, allow_incomplete, memory_map)
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
