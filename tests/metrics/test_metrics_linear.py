"""Oracle tests of ident3d.metrics.linear against scikit-learn, plus known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_helpers import KINDS, _structured
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

from ident3d.errors import DataError, UsageError
from ident3d.metrics import (
    linear_r2,
)


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
