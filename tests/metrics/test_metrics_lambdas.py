"""Tests of ident3d.metrics.lambdas."""

from __future__ import annotations

import numpy as np
import pytest

from ident3d.errors import DataError
from ident3d.metrics import (
    compare_lambdas,
)


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
