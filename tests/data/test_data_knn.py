"""Tests of ident3d.data.knn: the backends agree with brute force."""

from __future__ import annotations

import numpy as np
import pytest

from ident3d import data as D


@pytest.mark.parametrize("n", [1, 2, 700, 3000, 40_000])
def test_backends_agree_with_brute_force(n: int) -> None:
    rng = np.random.default_rng(n)
    table = rng.uniform(-1, 1, (n, 10)).astype(np.float32)
    q = rng.uniform(-1, 1, (300, 10))
    k = min(2, n)
    t64 = table.astype(np.float64)
    sq = (q**2).sum(1)[:, None] - 2 * q @ t64.T + (t64**2).sum(1)[None]
    true = np.sqrt(np.maximum(sq, 0))
    want = np.argsort(true, axis=1, kind="stable")[:, :k]
    for backend in ("blocks", "kdtree", "torch"):
        d, i = D.NearestNeighbours(table, backend, "cpu").query(q, k)
        d, i = np.asarray(d), np.asarray(i)
        assert np.array_equal(i, want), backend
        assert np.allclose(d, np.take_along_axis(true, want, 1), atol=1e-5), backend
