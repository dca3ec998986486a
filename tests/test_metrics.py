"""Oracle tests for ident3d.metrics against scikit-learn / scipy, plus known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from ident3d.errors import DataError, UsageError
from ident3d.metrics import (
    KERNEL_ALPHAS,
    KERNEL_GAMMAS,
    block_r2,
    compare_lambdas,
    kernel_r2,
    kfold_slices,
    linear_r2,
    mcc,
)
from ident3d.metrics.kernel import _ridge_solve


@pytest.fixture(autouse=True)
def _one_thread():
    """Small problems: one BLAS/OpenMP thread each for torch and scikit-learn. On a loaded
    machine two spinning OpenMP threads make these tiny solves 50x slower."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _structured(kind: str, n: int = 600, d: int = 5, seed: int = 0):
    """(h, z) pairs of the structured kinds the oracle tests cover."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, size=(n, d))
    if kind == "random":
        h = rng.normal(size=(n, d + 2))
    elif kind == "identity":
        h = z.copy()
    elif kind == "permutation":
        h = z[:, rng.permutation(d)] * rng.choice([-1.0, 1.0], size=d) + 0.3
    elif kind == "rotation":
        h = z @ _rotation(d, rng) + 0.05 * rng.normal(size=(n, d))
    elif kind == "warp":
        h = np.tanh(2.0 * z) + 0.2 * z**3 + 0.05 * rng.normal(size=(n, d))
    else:
        raise AssertionError(kind)
    return h, z


KINDS = ["random", "identity", "permutation", "rotation", "warp"]


def _sk_linear(h, z, n_fit):
    model = LinearRegression().fit(h[:n_fit], z[:n_fit])
    return r2_score(z[n_fit:], model.predict(h[n_fit:]), multioutput="raw_values")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fraction", [0.5, 0.3])
def test_linear_r2_matches_sklearn(kind, fraction):
    h, z = _structured(kind)
    res = linear_r2(h, z, fit_fraction=fraction)
    n_fit = int(np.floor(len(h) * fraction))
    expected = _sk_linear(h, z, n_fit)
    assert res.n_fit == n_fit and res.n_score == len(h) - n_fit
    assert not res.in_sample and res.protocol == "linear-ols-heldout"
    np.testing.assert_allclose(res.per_factor, expected, atol=1e-6, rtol=0)
    assert abs(res.mean - expected.mean()) < 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_linear_r2_in_sample_matches_sklearn(kind):
    h, z = _structured(kind, seed=3)
    res = linear_r2(torch.from_numpy(h).float(), torch.from_numpy(z), in_sample=True)
    h32 = h.astype(np.float32).astype(np.float64)  # the tensor above was float32
    model = LinearRegression().fit(h32, z)
    expected = r2_score(z, model.predict(h32), multioutput="raw_values")
    np.testing.assert_allclose(res.per_factor, expected, atol=1e-6, rtol=0)
    assert res.in_sample and res.protocol == "linear-ols-in-sample"
    assert res.n_fit == res.n_score == len(h)


def test_linear_r2_known_answers():
    h, z = _structured("identity", n=400)
    assert linear_r2(h, z).mean == pytest.approx(1.0, abs=1e-12)
    res = linear_r2(np.full((400, 3), 0.7), z)  # constant encoder predicts the fit-set mean
    assert all(-0.1 < v <= 0.0 for v in res.per_factor)
    h, z = _structured("rotation", n=400)
    assert linear_r2(h, z).mean > 0.99
    # a 1-D encoder that recovers one factor exactly
    res = linear_r2(2 * z[:, 1] - 1, z)
    assert res.per_factor[1] == pytest.approx(1.0, abs=1e-12)
    assert max(res.per_factor[0], res.per_factor[2]) < 0.2


def test_linear_r2_rank_deficient_matches_sklearn():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(300, 3))
    h = np.concatenate([z, z[:, :1] * 2.0, np.ones((300, 1))], axis=1)  # collinear + constant
    y = z + 0.1 * rng.normal(size=z.shape)
    res = linear_r2(h, y)
    np.testing.assert_allclose(res.per_factor, _sk_linear(h, y, 150), atol=1e-6, rtol=0)
    assert min(res.per_factor) > 0.95


def test_linear_r2_prediction_arrays_and_dict():
    h, z = _structured("warp", n=100)
    res = linear_r2(h, z, return_predictions=True)
    assert res.predictions.shape == res.targets.shape == (50, 5)
    np.testing.assert_array_equal(res.targets, z[50:])
    d = res.to_dict()
    assert set(d) >= {"mean", "per_factor", "protocol", "n_fit", "n_score", "in_sample"}
    assert "predictions" not in d


def test_linear_r2_bad_input():
    h, z = _structured("random", n=10)
    with pytest.raises(UsageError, match="too few samples"):
        linear_r2(h[:3], z[:3])
    with pytest.raises(UsageError, match="fit_fraction"):
        linear_r2(h, z, fit_fraction=1.0)
    with pytest.raises(DataError, match="different sample counts"):
        linear_r2(h, z[:9])
    bad = h.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        linear_r2(bad, z)


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


# ---------------------------------------------------------------------------------------------
# kernel ridge


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


# ---------------------------------------------------------------------------------------------
# blocks and lambdas


def test_block_r2_content_vs_style():
    rng = np.random.default_rng(8)
    z = rng.uniform(-1, 1, size=(800, 5))
    h = np.concatenate([z[:, :3] @ _rotation(3, rng), rng.normal(size=(800, 2))], axis=1)
    res = block_r2(h, z, {"content": [0, 1, 2], "style": [3, 4]})
    assert res.blocks["content"]["r2"] > 0.999 and res.blocks["style"]["r2"] < 0.05
    lin = linear_r2(h, z)
    assert res.blocks["style"]["per_factor"] == lin.per_factor[3:]
    assert res.blocks["content"]["r2"] == pytest.approx(np.mean(lin.per_factor[:3]))
    # restricted to the style part of the encoding: nothing is predicted
    sub = block_r2(h, z, {"content": [0, 1, 2]}, encoding_dims=[3, 4])
    assert sub.blocks["content"]["r2"] < 0.05 and sub.encoding_dims == [3, 4]
    ker = block_r2(h[:400], z[:400], {"content": [0, 1]}, method="kernel", n_fit=280)
    assert ker.blocks["content"]["r2"] > 0.95 and ker.method == "kernel"
    assert set(res.to_dict()) == {"method", "blocks", "encoding_dims", "protocol"}
    with pytest.raises(UsageError, match="block 'x'"):
        block_r2(h, z, {"x": [7]})
    with pytest.raises(UsageError, match="encoding_dims"):
        block_r2(h, z, {"x": [0]}, encoding_dims=[9])


def test_compare_lambdas_through_matching():
    true = np.linspace(5, 25, 10)
    perm = np.random.default_rng(0).permutation(10)
    learned = np.empty(10)
    learned[perm] = true * 1.1  # encoding dim perm[i] carries factor i, 10% too large
    # the matching mcc would return: factor i -> encoding dim perm[i]
    res = compare_lambdas(learned, true, matching=perm)
    np.testing.assert_allclose(res.learned_matched, true * 1.1)
    np.testing.assert_allclose(res.relative_error, 0.1, atol=1e-12)
    assert res.mean_relative_error == pytest.approx(0.1)
    assert res.rank_correlation == pytest.approx(1.0)
    np.testing.assert_allclose(res.sorted_learned, np.sort(true) * 1.1)
    # identity matching on permuted lambdas: order not recovered, sorted comparison unchanged
    res = compare_lambdas(learned, true)
    assert res.rank_correlation < 0.9 and res.mean_sorted_relative_error == pytest.approx(0.1)
    # bimodal truth: rank correlation still defined; constant truth: None
    assert compare_lambdas([5.5] * 5 + [23.0] * 5, [5.0] * 5 + [25.0] * 5).rank_correlation > 0.99
    assert compare_lambdas([1.0, 2.0], [3.0, 3.0]).rank_correlation is None
    with pytest.raises(DataError, match="give a matching"):
        compare_lambdas(np.ones(3), np.ones(2))
    with pytest.raises(DataError, match="positive"):
        compare_lambdas(np.ones(2), [1.0, -1.0])


@pytest.mark.gpu
def test_metrics_on_cuda_match_cpu():
    h, z = _structured("warp", n=500, d=3, seed=2)
    hc, zc = torch.from_numpy(h).cuda(), torch.from_numpy(z).cuda()
    np.testing.assert_allclose(
        kernel_r2(hc, zc, n_fit=350, device="cuda").per_factor,
        kernel_r2(h, z, n_fit=350).per_factor,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        linear_r2(hc, zc, device="cuda").per_factor, linear_r2(h, z).per_factor, atol=1e-9
    )
    assert mcc(hc, zc, device="cuda").matching == mcc(h, z).matching
