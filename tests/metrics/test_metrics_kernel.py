"""Oracle tests of ident3d.metrics.kernel against scikit-learn's GridSearchCV(KernelRidge)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_helpers import KINDS, _structured
from sklearn.metrics import r2_score

from ident3d.errors import UsageError
from ident3d.metrics import (
    KERNEL_ALPHAS,
    KERNEL_GAMMAS,
    kernel_r2,
    kfold_slices,
    linear_r2,
)
from ident3d.metrics.kernel import _ridge_solve


def _sk_kernel(h, z, n_fit):
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import StandardScaler

    sx, sy = StandardScaler().fit(h[:n_fit]), StandardScaler().fit(z[:n_fit])
    x, xs = sx.transform(h[:n_fit]), sx.transform(h[n_fit:])
    y, ys = sy.transform(z[:n_fit]), sy.transform(z[n_fit:])
    grid = {"alpha": list(KERNEL_ALPHAS), "gamma": list(KERNEL_GAMMAS)}
    out = []
    for i in range(z.shape[1]):
        search = GridSearchCV(KernelRidge(kernel="rbf"), grid, cv=3).fit(x, y[:, i])
        out.append(r2_score(ys[:, i], search.predict(xs)))
    return np.array(out)


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_r2_matches_sklearn_gridsearch(kind):
    h, z = _structured(kind, n=400, d=3, seed=21)
    res = kernel_r2(h, z, n_fit=280)
    expected = _sk_kernel(h, z, 280)
    np.testing.assert_allclose(res.per_factor, expected, atol=0.01, rtol=0)
    assert res.n_fit == 280 and res.n_score == 120 and not res.in_sample
    assert len(res.params["alpha"]) == 3 and set(res.params["gamma"]) <= set(KERNEL_GAMMAS)
    assert np.array(res.params["cv_mean_r2"]).shape == (3, 16)


def test_kernel_r2_known_answers():
    h, z = _structured("identity", n=500, d=3, seed=1)
    assert kernel_r2(h, z, n_fit=350).mean > 0.99
    h, z = _structured("warp", n=500, d=3, seed=1)
    res = kernel_r2(h, z, n_fit=350, return_predictions=True)
    assert res.mean > 0.95  # nonlinear but invertible: kernel ridge recovers it
    assert linear_r2(h, z).mean < res.mean
    # predictions come back in the factors' own units
    np.testing.assert_array_equal(res.targets, z[350:])
    np.testing.assert_allclose(
        r2_score(res.targets, res.predictions, multioutput="raw_values"), res.per_factor, atol=1e-9
    )
    res = kernel_r2(np.full((500, 4), 3.0), z, n_fit=350)  # constant encoder
    assert all(-0.1 < v <= 1e-9 for v in res.per_factor)
    rng = np.random.default_rng(0)
    assert kernel_r2(rng.normal(size=(500, 4)), z, n_fit=350).mean < 0.1


def test_kernel_r2_n_score_and_errors():
    h, z = _structured("rotation", n=200, d=2)
    assert kernel_r2(h, z, n_fit=120, n_score=50).n_score == 50
    with pytest.raises(UsageError, match="too few samples"):
        kernel_r2(h, z, n_fit=199)
    with pytest.raises(UsageError, match="too few samples"):
        kernel_r2(h, z)  # default 10,240 to fit


def test_kfold_slices_match_sklearn():
    from sklearn.model_selection import KFold

    for n in (9, 10, 11, 10_240):
        ours = kfold_slices(n, 3)
        for (a, b), (_, test) in zip(ours, KFold(3).split(np.zeros(n)), strict=True):
            np.testing.assert_array_equal(np.arange(a, b), test)


def test_ridge_solve_falls_back_when_not_positive_definite():
    k = torch.tensor([[1.0, 2.0], [2.0, 1.0]], dtype=torch.float64)  # indefinite
    y = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    coef = _ridge_solve(k, y, 0.5)
    np.testing.assert_allclose((k + 0.5 * torch.eye(2)) @ coef, y, atol=1e-12)
    assert k[0, 0] == 1.0  # diagonal restored
