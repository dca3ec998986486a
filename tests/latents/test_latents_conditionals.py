"""Tests of ident3d.latents.conditionals: the laws p(z~ | z) (KS tests against scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from latents_helpers import ALPHA, N, ks_ok, rng
from scipy import integrate, special, stats

from ident3d.errors import UsageError
from ident3d.latents import (
    AnisotropicNormalConditional,
    Box,
    GenNormalConditional,
    LaplaceConditional,
    NormalConditional,
    Sphere,
    Unbounded,
    Uniform,
    VMFConditional,
    anisotropic_lambdas,
    latent_model_from_options,
    make_conditional,
)


def test_normal_conditional_on_box_is_truncated_normal_not_clipped():
    sigma, c = 0.3, 0.85
    z = np.full((N, 2), c)
    zt = NormalConditional(sigma=sigma).sample(z, Box(2), rng(5))
    assert zt.max() < 1.0 and zt.min() > -1.0  # clipping would put mass exactly on 1.0
    tn = stats.truncnorm((-1 - c) / sigma, (1 - c) / sigma, loc=c, scale=sigma)
    assert ks_ok(zt[:, 0], tn.cdf)
    assert ks_ok(zt[:, 1], tn.cdf)


def test_laplace_conditional_on_box_is_truncated_laplace():
    b, c = 0.4, -0.7
    z = np.full((N, 1), c)
    zt = LaplaceConditional(scale=b).sample(z, Box(1), rng(6))
    lap = stats.laplace(loc=c, scale=b)
    lo, hi = lap.cdf(-1.0), lap.cdf(1.0)
    assert ks_ok(zt[:, 0], lambda x: (lap.cdf(np.clip(x, -1, 1)) - lo) / (hi - lo))


def test_gennormal_conditional_matches_scipy_gennorm():
    for p, scale in [(1.0, 0.2), (3.0, 0.5), (0.7, 0.1)]:
        z = np.zeros((N, 1))
        zt = GenNormalConditional(p=p, scale=scale).sample(z, Unbounded(1), rng(7))
        assert ks_ok(zt[:, 0], stats.gennorm(p, scale=scale).cdf), (p, scale)


def test_gennormal_p2_is_normal_with_sigma_scale_over_sqrt2():
    zt = GenNormalConditional(p=2.0, scale=1.0).sample(np.zeros((N, 1)), Unbounded(1), rng(8))
    assert ks_ok(zt[:, 0], stats.norm(scale=1 / math.sqrt(2)).cdf)


def test_anisotropic_unbounded_has_precision_lambda():
    lam = anisotropic_lambdas("linspace", 4)
    zt = AnisotropicNormalConditional(lambdas=lam).sample(np.zeros((N, 4)), Unbounded(4), rng(9))
    for i, li in enumerate(lam):
        assert ks_ok(zt[:, i], stats.norm(scale=1 / math.sqrt(li)).cdf)


def test_conditional_subset_keeps_other_factors_exactly():
    model = latent_model_from_options(space=Box(10), conditional="normal", dims="pos_x,7-9")
    z = model.sample_pairs(2000, seed=1)
    changed = np.any(z[:, 0] != z[:, 1], axis=0)
    assert changed.tolist() == [True, False, False, False, False, False, False, True, True, True]


def vmf_w_cdf(kappa: float, d: int):
    """CDF of w = mu . x under vMF on S^{d-1}: density ∝ exp(kappa w) (1 - w^2)^((d-3)/2)."""
    grid = np.linspace(-1, 1, 20001)
    dens = np.exp(kappa * (grid - 1)) * (1 - grid**2) ** ((d - 3) / 2)
    cdf = integrate.cumulative_trapezoid(dens, grid, initial=0)
    cdf /= cdf[-1]
    return lambda x: np.interp(x, grid, cdf)


@pytest.mark.parametrize("d,kappa", [(3, 5.0), (10, 20.0), (10, 300.0)])
def test_vmf_radial_law_and_mean_resultant(d, kappa):
    mu = Uniform().sample(Sphere(d), N, rng(10))
    x = VMFConditional(kappa=kappa).sample(mu, Sphere(d), rng(11))
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    w = np.sum(mu * x, axis=1)
    assert ks_ok(w, vmf_w_cdf(kappa, d))
    a_d = special.ive(d / 2, kappa) / special.ive(d / 2 - 1, kappa)
    assert abs(w.mean() - a_d) < 4 * w.std() / math.sqrt(N)


def test_vmf_tangent_direction_is_isotropic():
    d = 4
    mu = np.tile(np.eye(d)[0], (N, 1))
    x = VMFConditional(kappa=3.0).sample(mu, Sphere(d), rng(12))
    tangent = x[:, 1:] / np.linalg.norm(x[:, 1:], axis=1, keepdims=True)
    b = stats.beta((d - 2) / 2, (d - 2) / 2)  # coordinate of a uniform point on S^{d-2}
    assert ks_ok((tangent[:, 0] + 1) / 2, b.cdf)


def _slow_aninfonce_reference(z, lam, tol, r):
    out = np.empty_like(z)
    for i in range(len(z)):
        while True:
            y = z[i] + r.standard_normal(z.shape[1]) / np.sqrt(lam)
            if abs(np.linalg.norm(y) - 1) < tol:
                out[i] = y / np.linalg.norm(y)
                break
    return out


def test_anisotropic_extended_sphere_matches_slow_reference():
    lam = np.array(anisotropic_lambdas("bimodal", 10))
    z = Uniform().sample(Sphere(10), 6000, rng(13))
    cond = AnisotropicNormalConditional(lambdas=tuple(lam), ext_tol=0.1)
    fast = cond.sample(z, Sphere(10), rng(14))
    slow = _slow_aninfonce_reference(z, lam, 0.1, rng(15))
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-12)
    for i in (0, 9):
        assert stats.ks_2samp(fast[:, i] - z[:, i], slow[:, i] - z[:, i]).pvalue > ALPHA
    # the high-precision half moves less than the low-precision half
    dz = np.abs(fast - z).mean(axis=0)
    assert dz[:5].mean() < 0.7 * dz[5:].mean()


def test_sphere_conditional_must_act_on_whole_sphere():
    with pytest.raises(UsageError, match="all of its coordinates"):
        NormalConditional(sigma=0.1, dims=(0,)).sample(np.eye(3)[:1], Sphere(3), rng())


def test_vmf_on_box_is_an_error():
    with pytest.raises(UsageError, match="sphere"):
        make_conditional("vmf", dim=3).sample(np.zeros((2, 3)), Box(3), rng())
