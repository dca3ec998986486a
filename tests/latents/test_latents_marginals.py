"""Tests of ident3d.latents.marginals: the laws p(z) (KS tests against scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from latents_helpers import N, ks_ok, rng
from scipy import stats

from ident3d.errors import UsageError
from ident3d.latents import (
    Box,
    Laplace,
    Normal,
    Sphere,
    Unbounded,
    Uniform,
)


def test_uniform_box_is_uniform_per_coordinate():
    z = Uniform().sample(Box(3, -2.0, 1.0), N, rng(1))
    for i in range(3):
        assert ks_ok(z[:, i], stats.uniform(-2.0, 3.0).cdf)


def test_uniform_sphere_has_beta_coordinates_and_unit_norm():
    n = 10
    z = Uniform().sample(Sphere(n), N, rng(2))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-12)
    # a coordinate of a uniform point on S^{n-1}: (x + 1) / 2 ~ Beta((n-1)/2, (n-1)/2)
    b = stats.beta((n - 1) / 2, (n - 1) / 2)
    assert ks_ok((z[:, 3] + 1) / 2, b.cdf)
    np.testing.assert_allclose(np.cov(z.T), np.eye(n) / n, atol=0.01)


def test_normal_marginal_truncated_on_box():
    sigma = 0.7
    z = Normal(sigma).sample(Box(2), N, rng(3))
    assert z.min() >= -1 and z.max() <= 1
    tn = stats.truncnorm(-1 / sigma, 1 / sigma, scale=sigma)
    assert ks_ok(z[:, 0], tn.cdf)


def test_laplace_marginal_unbounded():
    z = Laplace(0.5).sample(Unbounded(2), N, rng(4))
    assert ks_ok(z[:, 1], stats.laplace(scale=0.5).cdf)


def test_uniform_marginal_rejects_unbounded_space():
    with pytest.raises(UsageError):
        Uniform().sample(Unbounded(2), 3, rng())
