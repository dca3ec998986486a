"""Structural causal models: laws, topological sampling, conditional means, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from latents_helpers import ks_ok, rng
from scipy import stats

from ident3d.errors import UsageError
from ident3d.latents import (
    FACTOR_NAMES,
    SCM,
    block_rng,
    scm_from_dict,
    truncated_normal,
    truncated_normal_mean,
)


def _scm(factors: dict, n_classes: int = 1, aliases: dict | None = None) -> SCM:
    return scm_from_dict({"factors": factors}, "test.toml", n_classes, aliases)


def _trunc_mean(mu: np.ndarray, sd: float) -> np.ndarray:
    return truncated_normal_mean(mu, sd, -1.0, 1.0)


@pytest.mark.parametrize(("mu", "sd"), [(0.3, 1.0), (-0.9, 0.2), (3.0, 0.5), (-6.0, 1.0)])
def test_truncated_normal_mean_is_scipys(mu: float, sd: float) -> None:
    a, b = (-1 - mu) / sd, (1 - mu) / sd
    want = stats.truncnorm.mean(a, b, loc=mu, scale=sd)
    assert float(truncated_normal_mean(np.array([mu]), sd, -1.0, 1.0)[0]) == pytest.approx(want)


@pytest.mark.parametrize(("mu", "sd"), [(0.3, 1.0), (-0.9, 0.2), (3.0, 0.5), (-6.0, 1.0)])
def test_truncated_normal_is_the_truncated_law(mu: float, sd: float) -> None:
    """Exact by the inverse CDF, also with the mean far outside the interval."""
    x = truncated_normal(np.full(40_000, mu), np.float64(sd), -1.0, 1.0, rng(1))
    assert x.min() >= -1.0 and x.max() <= 1.0
    a, b = (-1 - mu) / sd, (1 - mu) / sd
    assert ks_ok(x, stats.truncnorm(a, b, loc=mu, scale=sd).cdf)


def test_roots_constants_and_grids() -> None:
    scm = _scm(
        {
            "pos_x": {"law": "uniform", "low": -0.5, "high": 0.25},
            "rot_gamma": {"law": "constant", "value": 0.0},
            "pos_z": {"law": "grid", "values": [-1.0, 0.0, 0.5], "probs": [0.5, 0.25, 0.25]},
        }
    )
    raw, cls = scm.sample(100_000, rng(2))
    assert raw.shape == (100_000, 10) and not cls.any()
    assert ks_ok(raw[:, 0], stats.uniform(-0.5, 0.75).cdf)
    assert np.all(raw[:, 5] == 0.0)
    vals, counts = np.unique(raw[:, 2], return_counts=True)
    assert vals.tolist() == [-1.0, 0.0, 0.5]
    assert np.allclose(counts / 100_000, [0.5, 0.25, 0.25], atol=0.006)
    assert ks_ok(raw[:, 1], stats.uniform(-1, 2).cdf)  # undeclared: uniform root
    assert scm.nodes["pos_z"].values(1) == [-1.0, 0.0, 0.5]


def test_normal_child_has_the_declared_conditional_mean() -> None:
    """Regression on 100k samples: E[child | parents] is the mean of a normal with mean
    bias + w . parents, truncated to [-1, 1] (binned over the parent)."""
    scm = _scm(
        {
            "hue_spot": {"law": "normal", "parents": ["hue_object"], "scale": 0.5},
            "pos_y": {
                "law": "normal",
                "parents": ["pos_x", "hue_spot"],
                "weights": [0.8, -0.5],
                "bias": 0.1,
                "scale": 0.3,
            },
        }
    )
    assert scm.order == ("hue_spot", "pos_y")
    raw, _ = scm.sample(100_000, rng(3))
    parent, child = raw[:, 7], raw[:, 8]
    edges = np.linspace(-1, 1, 11)
    idx = np.digitize(parent, edges[1:-1])
    for k in range(10):
        sel = idx == k
        predicted = _trunc_mean(parent[sel], 0.5).mean()
        assert abs(child[sel].mean() - predicted) < 0.02
    # two parents: the residual of the child after its predicted mean has mean 0 per bin
    mu = 0.1 + 0.8 * raw[:, 0] - 0.5 * raw[:, 8]
    resid = raw[:, 1] - _trunc_mean(mu, 0.3)
    assert abs(resid.mean()) < 0.005
    assert abs(np.corrcoef(resid, raw[:, 0])[0, 1]) < 0.02
    # and the untruncated mean is what conditional_mean reports
    assert np.allclose(scm.conditional_mean("pos_y", raw[:5][:, [0, 8]]), mu[:5])


def test_class_is_a_discrete_latent_and_a_parent() -> None:
    """object_class (categorical) can be the parent of a table law: per class mean and scale."""
    scm = _scm(
        {
            "object_class": {"law": "categorical", "probs": [0.2, 0.3, 0.5]},
            "pos_x": {
                "law": "table",
                "parents": ["object_class"],
                "mean": [-0.5, 0.0, 0.6],
                "scale": [0.1, 0.2, 0.3],
            },
        },
        n_classes=3,
    )
    raw, cls = scm.sample(100_000, rng(4))
    assert np.allclose(np.bincount(cls) / 100_000, [0.2, 0.3, 0.5], atol=0.006)
    for c, (m, s) in enumerate([(-0.5, 0.1), (0.0, 0.2), (0.6, 0.3)]):
        x = raw[cls == c, 0]
        assert ks_ok(x, stats.truncnorm((-1 - m) / s, (1 - m) / s, loc=m, scale=s).cdf)
    assert scm.has_class and scm.nodes["object_class"].values(3) == [0.0, 1.0, 2.0]


def test_sampling_is_seeded_and_in_topological_order() -> None:
    f = {
        "pos_x": {"law": "normal", "parents": ["pos_y"], "scale": 0.2},
        "pos_y": {"law": "normal", "parents": ["pos_z"], "scale": 0.2},
    }
    scm = _scm(f)
    assert scm.order == ("pos_y", "pos_x")  # parents first, whatever the file order
    a = scm.sample(1000, block_rng(7, 0))[0]
    b = scm.sample(1000, block_rng(7, 0))[0]
    assert np.array_equal(a, b)
    assert SCM.from_config(scm.to_config()).to_config() == scm.to_config()
    assert scm.edges() == [("pos_z", "pos_y"), ("pos_y", "pos_x")]


def test_aliases_name_block_positions() -> None:
    scm = _scm(
        {"content.1": {"law": "normal", "parents": ["content.2"], "scale": 0.5}},
        aliases={"content.1": "hue_object", "content.2": "hue_spot"},
    )
    assert scm.nodes["hue_object"].parents == ("hue_spot",)


@pytest.mark.parametrize(
    ("factors", "message"),
    [
        (
            {
                "pos_x": {"law": "normal", "parents": ["pos_y"], "scale": 1},
                "pos_y": {"law": "normal", "parents": ["pos_x"], "scale": 1},
            },
            "cycle through pos_x, pos_y",
        ),
        ({"pos_w": {"law": "uniform"}}, "unknown factor 'pos_w'"),
        (
            {"pos_x": {"law": "normal", "parents": ["hue"], "scale": 1}},
            "unknown factor 'hue' in the parents of pos_x",
        ),
        ({"pos_x": {"law": "gamma"}}, "law must be one of"),
        ({"pos_x": {"law": "uniform", "sigma": 1}}, "unknown key 'sigma' for law uniform"),
        ({"pos_x": {"law": "normal", "parents": ["pos_y"], "scale": 0}}, "scale must be"),
        ({"pos_x": {"law": "normal", "scale": 1}}, "needs parents"),
        ({"pos_x": {"law": "uniform", "parents": ["pos_y"]}}, "is for a root"),
        ({"pos_x": {"law": "uniform", "low": 1, "high": 0}}, "need low < high"),
        ({"pos_x": {"law": "normal", "parents": ["pos_x"], "scale": 1}}, "its own parent"),
        (
            {"pos_x": {"law": "normal", "parents": ["pos_y"], "weights": [1, 2], "scale": 1}},
            "weights must be 1 number",
        ),
        ({"pos_x": {"law": "grid", "values": [0, 0]}}, "distinct numbers"),
        ({"pos_x": {"law": "grid", "values": [0, 1], "probs": [0.5, 0.6]}}, "sum to 1"),
        ({"object_class": {"law": "uniform"}}, "needs law categorical"),
        ({"pos_x": {"law": "categorical"}}, "for object_class only"),
        (
            {"pos_x": {"law": "table", "parents": ["pos_y"], "mean": [0], "scale": 1}},
            "must be a discrete factor",
        ),
        (
            {
                "object_class": {"law": "categorical"},
                "pos_x": {"law": "table", "parents": ["object_class"], "mean": [0], "scale": 1},
            },
            "mean has 1 entries, its parent object_class has 3 values",
        ),
        (
            {
                "object_class": {"law": "categorical"},
                "pos_x": {"law": "normal", "parents": ["object_class"], "scale": 1},
            },
            "needs law table",
        ),
    ],
)
def test_bad_scm_is_one_error_naming_file_and_factor(factors: dict, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        _scm(factors, n_classes=3)
    text = str(exc.value)
    assert text.startswith("test.toml: ") and message in text and "\n" not in text


def test_unknown_top_level_key_and_empty_file() -> None:
    with pytest.raises(UsageError, match="unknown key 'factor'"):
        scm_from_dict({"factor": {}}, "f.toml")
    with pytest.raises(UsageError, match=r"no \[factors.<name>\] table"):
        scm_from_dict({}, "f.toml")
    assert len(FACTOR_NAMES) == 10
