"""Contrastive losses: hand-computed values and a slow loop-based reference."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ident3d.errors import UsageError
from ident3d.losses import (
    AnInfoNCE,
    Candidates,
    EnsembleLoss,
    InfoNCE,
    build_loss,
    mi_lower_bound,
    pairwise_similarity,
)


def _theta_for(lam: list[float]) -> torch.Tensor:
    """theta with softplus(theta) = lam."""
    t = torch.tensor(lam, dtype=torch.float64)
    return torch.log(torch.expm1(t)).float()


def reference_loss(h1, h2, sim, negatives, symmetric, beta):
    """Loop-based InfoNCE: one anchor at a time, candidates listed explicitly."""
    b = len(h1)
    views = [h1, h2]
    total, count = 0.0, 0
    anchors = [0, 1] if symmetric else [0]
    for v in anchors:
        other = 1 - v
        for i in range(b):
            a = views[v][i]
            s_pos = sim(a, views[other][i])
            negs = [sim(a, views[other][j]) for j in range(b) if j != i]
            if negatives == "both":
                negs += [sim(a, views[v][j]) for j in range(b) if j != i]
            m = len(negs)
            if beta == 0:
                denom = math.exp(s_pos) + sum(math.exp(s) for s in negs)
            else:
                w = [math.exp(beta * s) for s in negs]
                wsum = sum(w)
                denom = math.exp(s_pos) + m * sum(
                    wi / wsum * math.exp(s) for wi, s in zip(w, negs, strict=True)
                )
            total += -(s_pos - math.log(denom))
            count += 1
    return total / count


def _lp(p, tau):
    return lambda a, b: -float(sum(abs(x - y) ** p for x, y in zip(a, b, strict=True))) / tau


def _dot(tau):
    return lambda a, b: float(sum(x * y for x, y in zip(a, b, strict=True))) / tau


def _cos(tau):
    def f(a, b):
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(x * x for x in b))
        return float(sum(x * y for x, y in zip(a, b, strict=True))) / (na * nb) / tau

    return f


def test_hand_computed_cross_l2():
    h = torch.tensor([[0.0], [1.0]])
    loss = InfoNCE("lp", p=2, negatives="cross", symmetric=False)(h, h)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_hand_computed_both_views():
    h = torch.tensor([[0.0], [1.0]])
    f = InfoNCE("lp", p=2, negatives="both", symmetric=True)
    # anchor 0: positive at distance 0, negatives h1[1] and h2[1] at squared distance 1
    assert f(h, h).item() == pytest.approx(math.log(1 + 2 * math.exp(-1)), rel=1e-6)
    assert f.n_negatives(2) == 2
    assert InfoNCE(negatives="cross").n_negatives(2) == 1


def test_hand_computed_dot_and_temperature():
    h1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    h2 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    loss = InfoNCE("dot", temperature=0.5, negatives="cross", symmetric=False)(h1, h2)
    # row 0: logits [2, 0], row 1: logits [0, 4]
    expected = 0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-4)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hand_computed_l1_and_l3():
    h1 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    h2 = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    # l1: row 0 logits [-1, -2]; row 1 logits [-1, 0]
    l1 = InfoNCE("lp", p=1, negatives="cross", symmetric=False)(h1, h2)
    e1 = 0.5 * (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(-1)))
    assert l1.item() == pytest.approx(e1, rel=1e-6)
    # l3: row 0 logits [-1, -2]; row 1 logits [-1, 0] (|1|^3 = 1)
    l3 = InfoNCE("lp", p=3, negatives="cross", symmetric=False)(h1, h2)
    assert l3.item() == pytest.approx(e1, rel=1e-5)


def test_cosine_is_scale_invariant_nt_xent():
    g = torch.Generator().manual_seed(0)
    h1, h2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    f = InfoNCE("cosine", temperature=0.1)
    assert f(h1, h2).item() == pytest.approx(f(3 * h1, 0.5 * h2).item(), rel=1e-5)


@pytest.mark.parametrize(
    ("similarity", "p", "negatives", "symmetric", "beta"),
    [
        (s, p, n, sym, beta)
        for (s, p), n, sym, beta in itertools.product(
            [("lp", 1.0), ("lp", 2.0), ("lp", 3.0), ("dot", 2.0), ("cosine", 2.0)],
            ["both", "cross"],
            [True, False],
            [0.0, 0.7],
        )
    ],
)
def test_infonce_matches_loop_reference(similarity, p, negatives, symmetric, beta):
    g = torch.Generator().manual_seed(1)
    h1, h2 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    tau = 0.7
    f = InfoNCE(similarity, p, tau, negatives, symmetric, beta)
    sim = {"lp": _lp(p, tau), "dot": _dot(tau), "cosine": _cos(tau)}[similarity]
    ref = reference_loss(h1.tolist(), h2.tolist(), sim, negatives, symmetric, beta)
    assert f(h1, h2).item() == pytest.approx(ref, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(("negatives", "beta"), [("both", 0.0), ("cross", 0.0), ("both", 1.5)])
def test_aninfonce_matches_loop_reference(negatives, beta):
    lam = [0.5, 2.0, 7.0]
    f = AnInfoNCE(3, negatives=negatives, hard_negative_beta=beta)
    with torch.no_grad():
        f.theta.copy_(_theta_for(lam))
    assert torch.allclose(f.lambdas(), torch.tensor(lam), rtol=1e-5)
    g = torch.Generator().manual_seed(2)
    h1, h2 = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)

    def sim(a, b):
        return -0.5 * sum(w * (x - y) ** 2 for w, x, y in zip(lam, a, b, strict=True))

    ref = reference_loss(h1.tolist(), h2.tolist(), sim, negatives, True, beta)
    assert f(h1, h2).item() == pytest.approx(ref, rel=1e-5)


def test_aninfonce_hand_computed_and_gradient():
    f = AnInfoNCE(2, negatives="cross", symmetric=False)
    with torch.no_grad():
        f.theta.copy_(_theta_for([2.0, 4.0]))
    h1 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    h2 = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # negatives at squared distance 1 in both dims: s = -1/2 (2 + 4) = -3
    loss = f(h1, h2)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-3)), rel=1e-6)
    loss.backward()
    assert f.theta.grad is not None and torch.all(f.theta.grad != 0)


def test_aninfonce_theta_init_is_seeded():
    a = AnInfoNCE(10, generator=torch.Generator().manual_seed(3))
    b = AnInfoNCE(10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.theta, b.theta)
    assert 0.0 < a.theta.std().item() < 0.3


def test_hard_negatives_with_equal_negatives_equal_plain():
    # an equilateral triangle: every anchor's negatives are equally similar, so the importance
    # weights are uniform and any beta gives plain InfoNCE
    h = torch.tensor([[1.0, 0.0], [-0.5, math.sqrt(3) / 2], [-0.5, -math.sqrt(3) / 2]])
    plain = InfoNCE("lp", negatives="both")(h, h).item()
    for beta in (0.5, 3.0):
        hard = InfoNCE("lp", negatives="both", hard_negative_beta=beta)
        assert hard(h, h).item() == pytest.approx(plain, rel=1e-6)
    h1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    p0 = InfoNCE("lp", negatives="cross", symmetric=False)(h1, h1).item()
    p1 = InfoNCE("lp", negatives="cross", symmetric=False, hard_negative_beta=2.0)(h1, h1).item()
    assert p1 > p0  # the closer of two unequal negatives counts more


def test_ensemble_is_weighted_sum_and_roundtrips():
    g = torch.Generator().manual_seed(4)
    h1, h2 = torch.randn(7, 3, generator=g), torch.randn(7, 3, generator=g)
    a, b = InfoNCE("lp", p=1), InfoNCE("cosine", temperature=0.2)
    e = EnsembleLoss([a, b], [0.25, 2.0])
    assert e(h1, h2).item() == pytest.approx(0.25 * a(h1, h2).item() + 2.0 * b(h1, h2).item())
    assert e.normalised(4.5) == pytest.approx(2.0)
    e2 = build_loss(e.spec())
    assert e2(h1, h2).item() == pytest.approx(e(h1, h2).item())


#: every loss that uses negatives, in the variants the global-batch candidates must handle
SHARE_SPECS = [
    {"name": "infonce", "similarity": "lp", "p": 2.0},
    {"name": "infonce", "similarity": "lp", "p": 1.0, "negatives": "cross"},
    {"name": "infonce", "similarity": "dot", "temperature": 0.5, "symmetric": False},
    {"name": "infonce", "similarity": "cosine", "temperature": 0.2, "negatives": "cross",
     "symmetric": False},
    {"name": "infonce", "similarity": "lp", "p": 3.0, "hard_negative_beta": 0.7},
    {"name": "aninfonce", "n": 3},
    {"name": "aninfonce", "n": 3, "negatives": "cross", "hard_negative_beta": 1.5},
    {"name": "ensemble", "members": [
        {"weight": 0.5, "loss": {"name": "infonce", "similarity": "lp", "p": 1.0}},
        {"weight": 2.0, "loss": {"name": "aninfonce", "n": 3, "symmetric": False}}]},
]  # fmt: skip


@pytest.mark.parametrize("spec", SHARE_SPECS, ids=lambda s: str(s)[:60])
@pytest.mark.parametrize("bounds", [(0, 3, 7), (0, 4, 8), (0, 1, 5, 6, 9)])
def test_shares_of_a_split_batch_add_up_to_the_whole(spec, bounds):
    """A batch split into row ranges (as over ranks), each range's anchors against the whole
    batch: the shares add up to the loss of the whole batch, and so do their gradients."""
    g = torch.Generator().manual_seed(7)
    b = bounds[-1]
    h1 = torch.randn(b, 3, generator=g, requires_grad=True)
    h2 = torch.randn(b, 3, generator=g, requires_grad=True)
    f = build_loss(spec, torch.Generator().manual_seed(3))
    whole = f(h1, h2)
    grads = torch.autograd.grad(whole, [h1, h2, *f.parameters()])
    shares = [
        f(h1[lo:hi], h2[lo:hi], Candidates(h1, h2, lo)) for lo, hi in itertools.pairwise(bounds)
    ]
    total = sum(shares)
    assert total.item() == pytest.approx(whole.item(), rel=1e-6)
    # a share alone is not the loss of its rows: the candidates are the whole batch
    k = max(range(len(shares)), key=lambda i: bounds[i + 1] - bounds[i])
    lo, hi = bounds[k], bounds[k + 1]
    assert abs(f(h1[lo:hi], h2[lo:hi]).item() - shares[k].item() * b / (hi - lo)) > 1e-3
    for a, r in zip(torch.autograd.grad(total, [h1, h2, *f.parameters()]), grads, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_n_negatives_of_every_loss():
    assert InfoNCE().n_negatives(32) == 62 and AnInfoNCE(3).n_negatives(32) == 62
    assert InfoNCE(negatives="cross").n_negatives(32) == 31
    e = EnsembleLoss([InfoNCE(), AnInfoNCE(3, negatives="cross")], [1.0, 1.0])
    assert e.n_negatives(32) == 31


def test_mi_lower_bound():
    assert mi_lower_bound(math.log(11) - 0.5, 10) == pytest.approx(0.5)
    # a uniform (uninformative) classifier has loss log(M + 1): bound 0
    h = torch.zeros(5, 2)
    f = InfoNCE("lp")
    assert mi_lower_bound(f(h, h).item(), f.n_negatives(5)) == pytest.approx(0.0, abs=1e-6)


def test_pairwise_similarity_l2_matches_cdist():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(9, 4, generator=g), torch.randn(6, 4, generator=g)
    ref = -(torch.cdist(a, b) ** 2)
    assert torch.allclose(pairwise_similarity(a, b, "lp", 2), ref, atol=1e-5)


def test_spec_roundtrip_and_errors():
    f = InfoNCE("lp", p=3, temperature=0.3, negatives="cross", hard_negative_beta=1.0)
    assert build_loss(f.spec()).spec() == f.spec()
    with pytest.raises(UsageError):
        InfoNCE("euclid")
    with pytest.raises(UsageError):
        InfoNCE(temperature=0)
    with pytest.raises(UsageError):
        InfoNCE(negatives="all")
    with pytest.raises(UsageError):
        InfoNCE(hard_negative_beta=-1)
    with pytest.raises(UsageError):
        build_loss({"name": "triplet"})
    with pytest.raises(UsageError):
        build_loss({"name": "infonce", "tau": 1.0})
