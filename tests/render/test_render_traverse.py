"""Latent traversals with the mock renderer: the grid of latents and the figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from render_helpers import _cli

from ident3d import render as R
from ident3d.scenes import load_preset


def test_traverse_mock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.png"
    code, stdout, err = _cli(
        ["traverse", "--out", str(out), "--renderer", "mock", "--steps", "3",
         "--resolution", "24", "--workers", "1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert out.is_file() and "3 steps x 10 factors" in stdout
    from PIL import Image

    assert Image.open(out).size[0] > 300
    code, _, err = _cli(
        ["traverse", "--out", str(tmp_path / "t.jpg"), "--renderer", "mock"], capsys
    )
    assert code == 2 and ".png" in err


def test_traversal_latents_vary_one_factor_per_column() -> None:
    mapping = load_preset("3dident").mapping("box")
    grid, values = R.traversal_latents(mapping, 5)
    assert grid.shape == (5, 10, 10) and values.shape == (5, 10)
    for j in range(10):
        col = grid[:, j, :]
        varying = np.flatnonzero(np.ptp(col, axis=0) > 0)
        assert varying.tolist() == [j]
    assert values[0, 0] < -2.5 and values[-1, 0] > 2.5  # x spans [-3, 3] in box mode
    assert json.dumps(values.tolist())
