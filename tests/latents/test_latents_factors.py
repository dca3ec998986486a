"""Tests of ident3d.latents.factors: the factor table and factor subsets."""

from __future__ import annotations

import pytest

from ident3d.errors import UsageError
from ident3d.latents import (
    FACTOR_NAMES,
    factor_table,
    parse_dims,
)


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
