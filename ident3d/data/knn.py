"""Exact nearest-neighbour search in a latent table: :class:`NearestNeighbours` (blocks,
k-d tree and torch backends), the per-class index and snapping of drawn latents to stored rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ident3d.errors import DataError, UsageError

BACKENDS = ("auto", "blocks", "kdtree", "torch")


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
