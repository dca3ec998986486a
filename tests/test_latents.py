"""Statistical and exact tests of the latent model. Every test uses fixed seeds, so a pass is
reproducible; each goodness-of-fit test would fail if its distribution were wrong (a clipped
instead of rejected truncation, a wrong scale, a wrong vMF radial law, ...)."""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate, special, stats

from ident3d.errors import UsageError
from ident3d.latents import (
    BLOCK_SIZE,
    FACTOR_NAMES,
    AnisotropicNormalConditional,
    Box,
    GenNormalConditional,
    Laplace,
    LaplaceConditional,
    LatentMapping,
    LatentModel,
    Normal,
    NormalConditional,
    Product,
    Sphere,
    Unbounded,
    Uniform,
    VMFConditional,
    anisotropic_lambdas,
    factor_table,
    hsv_to_rgb,
    latent_model_from_options,
    make_conditional,
    parse_dims,
    sphere_angles,
)

N = 40_000
REFERENCE = Path(__file__).resolve().parent.parent / "reference" / "orig-renders"
ALPHA = 1e-3  # KS p-value threshold; seeds are fixed, so this is deterministic


def ks_ok(x: np.ndarray, cdf) -> bool:
    return stats.kstest(x, cdf).pvalue > ALPHA


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- factor table -------------------------------------------------------------------------


def test_factor_table_order_and_names():
    assert FACTOR_NAMES == (
        "pos_x",
        "pos_y",
        "pos_z",
        "rot_alpha",
        "rot_beta",
        "rot_gamma",
        "spot_theta",
        "hue_object",
        "hue_spot",
        "hue_background",
    )
    table = factor_table()
    assert [r["index"] for r in table] == list(range(10))
    assert all(r["raw_range"] == [-1.0, 1.0] for r in table)


def test_parse_dims_names_ranges_and_errors():
    assert parse_dims("pos_x, 7-9", 10) == (0, 7, 8, 9)
    assert parse_dims("all", 10) is None
    assert parse_dims([2, "hue_spot"], 10) == (2, 8)
    with pytest.raises(UsageError, match="unknown factor"):
        parse_dims("pos_q", 10)
    with pytest.raises(UsageError, match="out of range"):
        parse_dims("12", 10)


# --- marginals ------------------------------------------------------------------------------


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


# --- conditionals on a box: per-coordinate truncation by rejection --------------------------


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


# --- conditionals on a sphere ----------------------------------------------------------------


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


def test_product_space_box_and_sphere():
    space = Product(Box(3), Sphere(8))
    model = LatentModel(space, Uniform(), NormalConditional(sigma=0.05))
    z = model.sample_pairs(500, seed=2)
    assert z.shape == (500, 2, 11)
    assert space.contains(z[:, 0]).all() and space.contains(z[:, 1]).all()


def test_vmf_on_box_is_an_error():
    with pytest.raises(UsageError, match="sphere"):
        make_conditional("vmf", dim=3).sample(np.zeros((2, 3)), Box(3), rng())


# --- reproducibility -------------------------------------------------------------------------


def test_same_seed_same_bits_and_ranges_agree():
    model = latent_model_from_options(space=Box(10), conditional="laplace", sigma=0.2)
    a = model.sample_pairs(BLOCK_SIZE + 100, seed=7)
    b = model.sample_pairs(BLOCK_SIZE + 100, seed=7)
    assert np.array_equal(a, b)
    # any range (a shard, a worker's slice) gives the same samples
    part = model.sample_range(BLOCK_SIZE - 50, BLOCK_SIZE + 60, seed=7)
    assert np.array_equal(part, a[BLOCK_SIZE - 50 : BLOCK_SIZE + 60])
    # sample i does not depend on the dataset size
    assert np.array_equal(model.sample_pairs(10, seed=7), a[:10])
    # singles are the first element of the pairs
    assert np.array_equal(model.sample(10, seed=7), a[:10, 0])
    assert not np.array_equal(model.sample_pairs(10, seed=8), a[:10])


def test_config_round_trip():
    model = latent_model_from_options(
        space=Sphere(10), conditional="anisotropic", lambdas="bimodal", ext_tol=0.1
    )
    again = LatentModel.from_config(model.to_config())
    assert again == model
    assert np.array_equal(again.sample_pairs(50, 1), model.sample_pairs(50, 1))


# --- raw -> scene mappings and colours -------------------------------------------------------


def test_box_mapping_matches_original_arithmetic():
    m = LatentMapping.from_preset_mode(
        "box", {"kind": "box", "position_scale": 3.0, "angle_scale_turns": 0.25, "hue": "colorsys"}
    )
    raw = rng(16).uniform(-1, 1, (100, 10))
    sc = m.to_scene(raw)
    np.testing.assert_allclose(sc[:, :3], raw[:, :3] * 3)
    np.testing.assert_allclose(sc[:, 3:], raw[:, 3:] * math.pi / 2)
    with pytest.raises(UsageError, match="expects 10 raw columns"):
        m.to_scene(np.zeros((2, 11)))


def test_periodic_mapping_angles_span_full_circles():
    m = LatentMapping.from_preset_mode(
        "periodic",
        {"kind": "periodic", "position_scale": 3.0, "z_range": [0, 3], "hue": "colorsys"},
    )
    raw = LatentModel(m.default_space()).sample(20_000, seed=3)
    sc = m.to_scene(raw)
    assert sc[:, 2].min() >= 0 and sc[:, 2].max() <= 3
    np.testing.assert_allclose(sc[:, 2], (raw[:, 2] + 1) * 1.5)
    ang = sc[:, 3:]
    assert ang[:, :6].min() >= 0 and ang[:, :6].max() <= 2 * math.pi
    assert ang[:, :6].max() > 1.9 * math.pi and ang[:, :6].min() < 0.1 * math.pi
    # the last angle (background hue) as the original computes it: [0, 2 pi), never negative
    assert ang[:, 6].min() >= 0 and ang[:, 6].max() < 2 * math.pi
    assert ang[:, 6].min() < 0.1 and ang[:, 6].max() > 2 * math.pi - 0.1
    # about half the samples (s_8 <= 0) lie in the upper half circle
    assert 0.45 < np.mean(ang[:, 6] > math.pi) < 0.55


def test_periodic_mapping_matches_the_original_generators_latents():
    # reference/orig-renders/periodic: raw (8 x 11) and scene (8 x 10) latents that the
    # original generator itself computed (float32); positions and all seven angles must agree
    from ident3d.scenes import load_preset

    ref = REFERENCE / "periodic"
    raw = np.load(ref / "raw_latents.npy")
    want = np.load(ref / "latents.npy")
    got = load_preset("3dident").mapping("periodic").to_scene(raw)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # at least one sample's background hue lies in (pi, 2 pi), where (-pi, pi] would differ
    assert (want[:, 9] > math.pi).any()


def test_box_mapping_matches_the_original_generators_latents():
    from ident3d.scenes import load_preset

    ref = REFERENCE / "box"
    got = load_preset("3dident").mapping("box").to_scene(np.load(ref / "raw_latents.npy"))
    np.testing.assert_allclose(got, np.load(ref / "latents.npy"), atol=2e-6)


def test_sphere_angles_invert_to_the_point():
    s = Uniform().sample(Sphere(8), 100, rng(17))
    a = sphere_angles(s)
    phi = a.copy()
    phi[:, :6] /= 2  # undo the doubling
    rec = np.empty_like(s)
    sin_prod = np.ones(len(s))
    for k in range(6):
        rec[:, k] = sin_prod * np.cos(phi[:, k])
        sin_prod = sin_prod * np.sin(phi[:, k])
    rec[:, 6] = sin_prod * np.cos(phi[:, 6])
    rec[:, 7] = sin_prod * np.sin(phi[:, 6])  # phi_7 in [0, 2 pi): sin < 0 where s_8 < 0
    np.testing.assert_allclose(rec, s, atol=1e-10)


def test_hsv_is_bit_for_bit_colorsys_including_negative_hues():
    h = rng(18).uniform(-1.2, 1.7, 2000)
    for s, v in [(1.0, 1.0), (0.8, 1.0), (0.6, 1.0), (0.0, 0.5)]:
        ours = hsv_to_rgb(h, s, v, "colorsys")
        ref = np.array([colorsys.hsv_to_rgb(x, s, v) for x in h])
        assert np.array_equal(ours, ref)
    # the facts document's example: out of gamut, rendered as is
    np.testing.assert_allclose(hsv_to_rgb(np.array([-0.1]), 1.0, 1.0)[0], [1.0, -0.6, 0.0])


def test_wrap_hue_is_always_in_gamut():
    h = rng(19).uniform(-2, 2, 2000)
    rgb = hsv_to_rgb(h, 0.8, 1.0, "wrap")
    assert rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_allclose(rgb, hsv_to_rgb(np.mod(h, 1.0), 0.8, 1.0, "colorsys"))
