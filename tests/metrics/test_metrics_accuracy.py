"""Tests of ident3d.metrics.accuracy: known answers (separable classes, random encodings) and
scikit-learn's LogisticRegression as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ident3d.errors import DataError, UsageError
from ident3d.metrics import logistic_accuracy


def _blobs(n: int, k: int, d: int, spread: float, rng: np.random.Generator):
    centres = rng.normal(size=(k, d)) * 6.0
    y = rng.integers(0, k, size=n)
    return centres[y] + spread * rng.normal(size=(n, d)), y


def test_separable_classes_score_one():
    rng = np.random.default_rng(0)
    h, y = _blobs(600, 7, 5, 0.3, rng)
    res = logistic_accuracy(h, y)
    assert res.per_factor[0] == 1.0 and res.mean == 1.0
    assert res.n_classes == [7] and res.n_fit == 300 and res.n_score == 300
    assert res.chance[0] < 0.3  # the majority class alone gets about 1/7


def test_random_encodings_score_chance():
    rng = np.random.default_rng(1)
    k = 4
    y = rng.integers(0, k, size=4000)
    h = rng.normal(size=(4000, 6))  # independent of the labels
    res = logistic_accuracy(h, y)
    assert abs(res.per_factor[0] - 1 / k) < 0.04
    assert abs(res.chance[0] - 1 / k) < 0.04


def test_two_factors_one_recovered():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 3, size=1000)
    b = rng.integers(0, 5, size=1000)
    h = np.stack([a + 0.05 * rng.normal(size=1000), rng.normal(size=1000)], 1)
    res = logistic_accuracy(h, np.stack([a, b], 1), return_predictions=True)
    assert res.per_factor[0] == 1.0 and abs(res.per_factor[1] - 0.2) < 0.06
    assert res.predictions.shape == (500, 2) and np.array_equal(res.targets[:, 0], a[500:])
    assert set(res.to_dict()) == {
        "mean", "per_factor", "chance", "n_classes", "protocol", "n_fit", "n_score", "params"
    }  # fmt: skip


@pytest.mark.parametrize("k", [2, 3, 5])
def test_matches_scikit_learn(k):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(10 + k)
    h, y = _blobs(800, k, 4, 8.0, rng)  # overlapping classes: accuracy well below 1
    y = y + 3  # labels need not start at 0
    res = logistic_accuracy(h, y, return_predictions=True)
    sk = LogisticRegression(C=1.0, max_iter=10000, tol=1e-10).fit(h[:400], y[:400])
    pred = sk.predict(h[400:])
    assert res.per_factor[0] == pytest.approx(float(np.mean(pred == y[400:])), abs=0.005)
    assert np.mean(res.predictions[:, 0] == pred) > 0.99
    assert 0.3 < res.per_factor[0] < 0.99


def test_inputs():
    rng = np.random.default_rng(3)
    h = rng.normal(size=(40, 3))
    # a single class in the fit part: always predicted
    y = np.zeros(40, int)
    y[-1] = 1
    res = logistic_accuracy(torch.as_tensor(h), torch.as_tensor(y))
    assert res.per_factor[0] == pytest.approx(19 / 20) and res.n_classes == [2]
    # integral floats are labels
    assert logistic_accuracy(h, y.astype(float)).per_factor == res.per_factor
    with pytest.raises(DataError, match="fractional"):
        logistic_accuracy(h, np.full(40, 0.5))
    with pytest.raises(DataError, match="sample counts"):
        logistic_accuracy(h, y[:30])
    with pytest.raises(UsageError, match="too few samples"):
        logistic_accuracy(h[:3], y[:3])
    with pytest.raises(UsageError, match="positive"):
        logistic_accuracy(h, y, c=0)
