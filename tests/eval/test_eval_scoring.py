"""Tests of ident3d.eval.scoring: report contents, defaults, factor names and blocks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_helpers import _arrays

from ident3d import eval as ev
from ident3d.errors import DataError, UsageError
from ident3d.latents import FACTOR_NAMES


def test_evaluate_report_contents():
    h, z = _arrays()
    res = ev.evaluate(
        h,
        z,
        ["a", "b", "c", "d"],
        kernel_fit=300,
        learned_lambdas=np.array([10.0, 2.0, 5.0, 1.0]),
        true_lambdas=[2.0, 5.0, 10.0],
        lambda_dims=[0, 1, 2],
        blocks={"kept": [0, 1, 2], "lost": [3]},
    )
    r = res.report
    for key in ("linear_r2", "kernel_r2", "mcc_pearson", "mcc_spearman"):
        assert isinstance(r[key], float)
    assert [f["name"] for f in r["per_factor"]] == ["a", "b", "c", "d"]
    assert r["per_factor"][3]["linear_r2"] < 0.1 and r["per_factor"][0]["kernel_r2"] > 0.95
    assert r["per_factor"][0]["matched_dim_pearson"] == 1  # h[:, 1] = tanh(z0)
    assert r["protocol"]["linear"]["n_fit"] == 300 and not r["protocol"]["linear"]["in_sample"]
    assert r["protocol"]["kernel"]["n_fit"] == 300 and r["protocol"]["kernel"]["reduced"]
    assert r["blocks"]["kept"]["r2"] > 0.9 and r["blocks"]["lost"]["r2"] < 0.1
    # matching a->1, b->2, c->0: learned lambdas 2, 5, 10 for true 2, 5, 10
    np.testing.assert_allclose(r["lambda"]["learned_matched"], [2.0, 5.0, 10.0])
    assert r["lambda"]["mean_relative_error"] == pytest.approx(0.0)
    json.dumps(r)  # JSON-ready
    assert res.predictions["kernel"].shape == res.targets["kernel"].shape == (300, 4)


def test_evaluate_defaults_and_errors():
    h, z = _arrays(n=80)
    r = ev.evaluate(h, z, kernel=False).report
    assert r["kernel_r2"] is None and "skipped" in r["protocol"]["kernel"]
    assert [f["name"] for f in r["per_factor"]] == ["z0", "z1", "z2", "z3"]
    assert r["protocol"]["kernel"]["skipped"]
    with pytest.raises(UsageError, match="too few samples"):
        ev.evaluate(h[:3], z[:3], kernel=False)
    with pytest.raises(UsageError, match="no-kernel"):
        ev.evaluate(h[:10], z[:10])
    with pytest.raises(UsageError, match="kernel split"):
        ev.evaluate(h, z, kernel_fit=79)
    with pytest.raises(UsageError, match="names"):
        ev.evaluate(h, z, ["x"], kernel=False)
    with pytest.raises(DataError, match="sample counts"):
        ev.evaluate(h, z[:50])


def test_factor_names_and_blocks():
    assert ev.factor_names(10) == list(FACTOR_NAMES)
    assert ev.factor_names(11) == [f"z{i}" for i in range(11)]
    assert ev.factor_names(2, [{"name": "a"}, {"name": "b"}]) == ["a", "b"]
    assert ev.resolve_blocks({"x": ["pos_y", "3"]}, list(FACTOR_NAMES)) == {"x": [1, 3]}
    with pytest.raises(UsageError, match="neither a factor name"):
        ev.resolve_blocks({"x": ["nope"]}, list(FACTOR_NAMES))
    spec = {"dims": [2, 3]}
    assert ev.default_blocks(["z0", "z1", "z2", "z3"], spec, None) == {
        "content": [0, 1],
        "style": [2, 3],
    }
    bimodal = ev.default_blocks(["z0", "z1", "z2", "z3"], {"dims": None}, [25, 25, 5, 5])
    assert bimodal == {"Lambda=25": [0, 1], "Lambda=5": [2, 3]}
    assert ev.default_blocks(["z0", "z1", "z2"], {"dims": None}, [5, 10, 25]) == {}


def test_constant_factors_are_reported_but_not_scored():
    """A factor constant over the evaluated samples (a fixed factor, or a view-specific one
    held at 0 in the encoded view) must not score R^2 = 1 or accuracy 1: it is not scored,
    is left out of the means and of its block, and is listed."""
    from ident3d.eval import evaluate

    rng = np.random.default_rng(0)
    n = 400
    z = np.column_stack([rng.uniform(-1, 1, n), np.zeros(n), rng.uniform(-1, 1, n), np.zeros(n)])
    h = rng.normal(size=(n, 4))  # encodes nothing
    rep = evaluate(
        h,
        z,
        ["a", "held", "b", "fixed"],
        kernel=False,
        factor_types=["continuous", "continuous", "continuous", "discrete"],
        blocks={"view": [0, 1], "rest": [2, 3]},
    ).report
    rows = {r["name"]: r for r in rep["per_factor"]}
    assert rows["held"]["linear_r2"] is None and rows["held"]["constant"]
    assert rows["fixed"].get("accuracy") is None and rows["fixed"]["constant"]
    assert rep["constant_factors"] == ["held", "fixed"]
    assert rep["accuracy"] is None
    assert abs(rep["linear_r2"]) < 0.1  # the mean of a and b only: chance
    assert rep["blocks"]["view"]["scored"] == [0] and abs(rep["blocks"]["view"]["r2"]) < 0.1
