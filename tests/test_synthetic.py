"""Torch synthetic DGPs: statistically equal to the numpy latent model, seeded, well mixed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from ident3d import latents
from ident3d.errors import UsageError
from ident3d.synthetic import (
    Mixing,
    SyntheticDGP,
    SyntheticSpec,
    lambda_preset,
    sample_gamma,
    sample_uniform_sphere,
    sample_vmf,
)

N = 6000
P_MIN = 1e-4  # KS tests: a wrong sampler fails by many orders of magnitude at this N


def _numpy_model(spec: SyntheticSpec) -> latents.LatentModel:
    """The numpy twin of a spec, built from ident3d.latents."""
    space = latents.make_space("sphere" if "sphere" in spec.space else spec.space, spec.n)
    if spec.space == "box":
        space = latents.Box(spec.n, spec.low, spec.high)
    marginal = {
        "uniform": latents.Uniform(),
        "normal": latents.Normal(),
        "laplace": latents.Laplace(),
    }[spec.marginal]
    cond = latents.make_conditional(
        spec.conditional,
        dim=spec.n,
        sigma=spec.sigma,
        p=spec.p,
        kappa=spec.kappa,
        lambdas=spec.resolved_lambdas(),
        ext_tol=spec.ext_tol if spec.space == "extended_sphere" else None,
        dims=spec.dims,
    )
    return latents.LatentModel(space, marginal, cond)


def _torch_pairs(spec: SyntheticSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    dgp = SyntheticDGP(spec, mixing=Mixing(spec.n, spec.mixing_depth))
    g = torch.Generator().manual_seed(seed)
    z = dgp.sample_latents(N, g)
    zt = dgp.sample_conditional(z, g)
    return z.double().numpy(), zt.double().numpy()


CASES = [
    SyntheticSpec(n=4, space="box", conditional="normal", sigma=0.3),
    SyntheticSpec(n=4, space="box", conditional="laplace", sigma=0.3, low=-0.5, high=1.0),
    SyntheticSpec(n=4, space="box", conditional="gennormal", sigma=0.4, p=3.0),
    SyntheticSpec(n=4, space="box", conditional="normal", sigma=0.5, dims=[1, 3]),
    SyntheticSpec(n=5, space="sphere", conditional="normal", sigma=0.2),
    SyntheticSpec(n=10, space="extended_sphere", conditional="anisotropic", lambdas="linspace"),
    SyntheticSpec(n=10, space="extended_sphere", conditional="anisotropic", lambdas="bimodal"),
    SyntheticSpec(n=3, space="unbounded", marginal="normal", conditional="laplace", sigma=0.5),
    SyntheticSpec(n=3, space="unbounded", marginal="laplace", conditional="gennormal", p=0.7),
]


@pytest.mark.parametrize("spec", CASES, ids=lambda s: f"{s.space}-{s.marginal}-{s.conditional}")
def test_matches_numpy_latent_model(spec: SyntheticSpec):
    z, zt = _torch_pairs(spec)
    model = _numpy_model(spec)
    rng = np.random.default_rng(0)
    rz = model.marginal.sample(model.space, N, rng)
    rzt = model.conditional.sample(rz, model.space, rng)
    # marginal of z and of the change z~ - z, coordinate by coordinate; and the overlap z . z~
    for k in range(spec.n):
        assert stats.ks_2samp(z[:, k], rz[:, k]).pvalue > P_MIN, ("marginal", k)
        assert stats.ks_2samp(zt[:, k] - z[:, k], rzt[:, k] - rz[:, k]).pvalue > P_MIN, (
            "change",
            k,
        )
    dots, rdots = (z * zt).sum(1), (rz * rzt).sum(1)
    assert stats.ks_2samp(dots, rdots).pvalue > P_MIN
    if spec.space == "box":
        assert zt.min() >= spec.low and zt.max() <= spec.high
    if "sphere" in spec.space:
        assert np.allclose(np.linalg.norm(zt, axis=1), 1.0, atol=1e-5)
    if spec.dims is not None:
        fixed = [k for k in range(spec.n) if k not in spec.dims]
        assert np.array_equal(z[:, fixed], zt[:, fixed])


def test_extended_sphere_differs_from_plain_projection():
    # the shell rule changes the law of the positives (it keeps only z + d near the sphere)
    ext = SyntheticSpec(
        n=10, space="extended_sphere", conditional="anisotropic", lambdas="linspace"
    )
    plain = SyntheticSpec(n=10, space="sphere", conditional="anisotropic", lambdas="linspace")
    d_ext = np.linalg.norm(np.subtract(*_torch_pairs(ext)), axis=1)
    d_plain = np.linalg.norm(np.subtract(*_torch_pairs(plain)), axis=1)
    assert stats.ks_2samp(d_ext, d_plain).pvalue < 1e-6


def test_gamma_sampler_matches_scipy():
    g = torch.Generator().manual_seed(1)
    for alpha in (0.3, 1.0, 4.5):
        t = sample_gamma((N,), alpha, g, torch.device("cpu")).numpy()
        assert stats.kstest(t, stats.gamma(alpha).cdf).pvalue > P_MIN


@pytest.mark.parametrize(("d", "kappa"), [(3, 2.0), (5, 8.0), (10, 20.0)])
def test_vmf_matches_its_exact_law(d, kappa):
    # w = mu . z~ has density proportional to exp(kappa w) (1 - w^2)^((d - 3) / 2) on [-1, 1];
    # compared with that law directly (not with another sampler)
    grid = np.linspace(-1.0, 1.0, 20001)
    logf = kappa * grid + (d - 3) / 2 * np.log(np.clip(1 - grid**2, 1e-300, None))
    f = np.exp(logf - logf.max())
    cdf = np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) / 2)])
    cdf /= cdf[-1]
    g = torch.Generator().manual_seed(2)
    mu = sample_vmf_mu = torch.nn.functional.normalize(torch.randn(N, d, generator=g), dim=1)
    zt = sample_vmf(sample_vmf_mu, kappa, g)
    w = (mu * zt).sum(1).double().numpy()
    assert stats.kstest(w, lambda x: np.interp(x, grid, cdf)).pvalue > P_MIN
    assert np.allclose(zt.norm(dim=1).numpy(), 1.0, atol=1e-5)
    # the direction orthogonal to mu is uniform: its mean is ~0
    resid = zt - (mu * zt).sum(1, keepdim=True) * mu
    assert resid.mean(0).abs().max().item() < 5.0 / np.sqrt(N)


def test_seeded_and_reproducible():
    spec = SyntheticSpec(
        n=10, space="extended_sphere", conditional="anisotropic", lambdas="linspace"
    )
    dgp = SyntheticDGP(spec)
    a = dgp.sample_pairs(50, torch.Generator().manual_seed(7))
    b = dgp.sample_pairs(50, torch.Generator().manual_seed(7))
    c = dgp.sample_pairs(50, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    z, x = dgp.sample(20, torch.Generator().manual_seed(3))
    assert torch.allclose(dgp.mix(z), x)


def test_mixing_is_seeded_well_conditioned_and_invertible():
    m1 = Mixing.draw(10, depth=3, seed=5, cond_draws=2000)
    m2 = Mixing.draw(10, depth=3, seed=5, cond_draws=2000)
    m3 = Mixing.draw(10, depth=3, seed=6, cond_draws=2000)
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(m1.layers[0].weight, m3.layers[0].weight)
    rng = np.random.default_rng(0)
    probe = rng.uniform(-1, 1, (2000, 10, 10))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    typical = np.median(np.linalg.cond(probe))
    for layer in m1.layers:
        assert np.linalg.cond(layer.weight.numpy()) < typical
        assert not layer.weight.requires_grad
    # injective: distinct latents stay distinct and the map's Jacobian has full rank
    z = torch.randn(5, 10, dtype=torch.float32)
    jac = torch.autograd.functional.jacobian(m1, z[0])
    assert torch.linalg.matrix_rank(jac).item() == 10
    x = m1(z)
    assert torch.cdist(x, x).fill_diagonal_(1.0).min() > 0


def _linear_r2(x: np.ndarray, z: np.ndarray) -> float:
    a = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(a, z, rcond=None)
    res = ((z - a @ coef) ** 2).sum(0) / ((z - z.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - res))


def test_default_mixing_is_as_hard_as_the_papers():
    """The default recipe (best of 25,000 draws, as the original main_mlp.py) gives condition
    numbers near the best possible and a mixing whose linear R^2 alone is about the AnInfoNCE
    paper's 0.66-0.69; the old 25%-quantile recipe gave 0.52-0.60 and an R^2 plateau of 0.89."""
    rng = np.random.default_rng(1)
    probe = rng.uniform(-1, 1, (5000, 10, 10))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    one_percent = np.quantile(np.linalg.cond(probe), 0.01)
    z = sample_uniform_sphere(4096, 10, torch.Generator().manual_seed(1), "cpu")
    scores = []
    for seed in range(4):
        m = Mixing.draw(10, 3, seed)
        for layer in m.layers:
            assert np.linalg.cond(layer.weight.numpy()) < one_percent
        scores.append(_linear_r2(m(z).numpy(), z.numpy()))
    assert 0.62 < np.mean(scores) < 0.72, scores
    old = [Mixing.draw(10, 3, seed, cond_quantile=0.25, cond_draws=10000) for seed in range(4)]
    old_scores = [_linear_r2(m(z).numpy(), z.numpy()) for m in old]
    assert np.mean(old_scores) < np.mean(scores) - 0.05


def test_lambda_presets():
    assert lambda_preset("bimodal", 10) == [25.0] * 5 + [5.0] * 5
    assert lambda_preset("bimodal", 10) == list(latents.anisotropic_lambdas("bimodal", 10))
    assert np.allclose(lambda_preset("linspace", 10), np.linspace(5, 25, 10))
    with pytest.raises(UsageError):
        lambda_preset("trimodal", 10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"space": "torus"},
        {"conditional": "cauchy"},
        {"space": "box", "conditional": "vmf"},
        {"space": "sphere", "marginal": "normal"},
        {"space": "unbounded", "marginal": "uniform", "conditional": "normal"},
        {"conditional": "anisotropic", "lambdas": [1.0, 2.0]},
        {"conditional": "normal", "sigma": -1.0},
        {"conditional": "normal", "dims": [0, 12]},
        {"mixing_depth": 0},
    ],
)
def test_bad_specs_raise_usage_error(kwargs):
    with pytest.raises(UsageError):
        SyntheticSpec(**kwargs).validate()


def test_spec_dict_roundtrip():
    spec = SyntheticSpec(n=6, space="box", conditional="laplace", dims=[0, 2])
    assert SyntheticSpec.from_dict({"kind": "synthetic", **spec.to_dict()}) == spec
    with pytest.raises(UsageError):
        SyntheticSpec.from_dict({"sigmaa": 1.0})
