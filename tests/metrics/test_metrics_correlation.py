"""Oracle tests of ident3d.metrics.correlation (MCC) against scipy, plus known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from metrics_helpers import KINDS, _structured
from scipy.stats import pearsonr, spearmanr

from ident3d.errors import UsageError
from ident3d.metrics import (
    mcc,
)


def _brute_mcc(c: np.ndarray) -> float:
    d = c.shape[0]
    return max(
        np.mean([abs(c[i, p[i]]) for i in range(d)]) for p in itertools.permutations(range(d))
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_mcc_matches_scipy(kind, method):
    h, z = _structured(kind, n=300, d=4, seed=11)
    h = h[:, :4]
    res = mcc(h, z, method=method)
    corr = pearsonr if method == "pearson" else spearmanr
    c = np.array([[corr(z[:, i], h[:, j])[0] for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(res.correlation, c, atol=1e-10)
    assert res.mean == pytest.approx(_brute_mcc(c), abs=1e-10)
    for i, j in enumerate(res.matching):
        assert res.per_factor[i] == pytest.approx(abs(c[i, j]), abs=1e-10)
        assert res.signs[i] == np.sign(c[i, j])
    assert sorted(res.matching) == [0, 1, 2, 3]


def test_mcc_spearman_with_ties_matches_scipy():
    rng = np.random.default_rng(2)
    z = rng.integers(0, 5, size=(200, 2)).astype(float)
    h = z + rng.integers(0, 3, size=(200, 2))
    res = mcc(h, z, method="spearman")
    for i in range(2):
        for j in range(2):
            assert res.correlation[i, j] == pytest.approx(spearmanr(z[:, i], h[:, j])[0], abs=1e-10)


def test_mcc_permuted_identity_recovers_matching():
    rng = np.random.default_rng(4)
    z = rng.uniform(-1, 1, size=(500, 6))
    perm = np.array([3, 0, 5, 1, 4, 2])  # h[:, j] = sign * z[:, perm[j]]
    signs = np.array([1, -1, 1, -1, 1, 1])
    h = z[:, perm] * signs * 3.0 + 1.0
    for method in ("pearson", "spearman"):
        res = mcc(h, z, method=method)
        assert res.mean == pytest.approx(1.0, abs=1e-12)
        for j, i in enumerate(perm):
            assert res.matching[i] == j
            assert res.signs[i] == signs[j]


def test_mcc_known_answers_and_shapes():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(2000, 3))
    assert mcc(rng.normal(size=(2000, 3)), z).mean < 0.1  # independent
    res = mcc(np.ones((2000, 3)), z)  # constant encoder: correlation 0, no NaN
    assert res.mean == 0.0
    # more encoding dims than factors: every factor matched
    res = mcc(np.concatenate([rng.normal(size=(2000, 2)), z], axis=1), z)
    assert res.matching == [2, 3, 4] and res.mean == pytest.approx(1.0)
    # fewer encoding dims than factors: one factor unmatched, reported as -1 / NaN / None
    res = mcc(z[:, [2, 0]], z)
    assert res.matching == [1, -1, 0] and res.mean == pytest.approx(1.0)
    d = res.to_dict()
    assert d["per_factor"][1] is None and d["matching"] == [1, -1, 0]
    with pytest.raises(UsageError, match="unknown correlation"):
        mcc(z, z, method="kendall")
