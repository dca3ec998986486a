"""Tests of ident3d.train.schedule: the learning-rate schedule."""

from __future__ import annotations

import pytest

from ident3d.train import lr_factor


def test_lr_factor_known_values():
    cos = {"schedule": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.2}
    assert lr_factor(cos, 0, 111) == pytest.approx(0.1)
    assert lr_factor(cos, 9, 111) == pytest.approx(1.0)
    assert lr_factor(cos, 10, 111) == pytest.approx(1.0)
    assert lr_factor(cos, 60, 111) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor(cos, 110, 111) == pytest.approx(0.2)
    const = {"schedule": "constant", "warmup_steps": 4}
    assert [lr_factor(const, s, 100) for s in (0, 3, 50)] == pytest.approx([0.25, 1.0, 1.0])
    assert lr_factor({"lr": 1e-4}, 7, 10) == 1.0  # configs written before schedules existed
