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


@pytest.mark.parametrize("steps,factors", [(7, 10), (3, 2)])
def test_traversal_value_labels_stay_inside_their_own_image(steps: int, factors: int) -> None:
    """Every value label is drawn within its own image's axes: the next row cannot hide it."""
    import matplotlib.pyplot as plt

    from ident3d.render.traverse import _traversal_grid

    images = np.zeros((steps, factors, 16, 16, 3), np.uint8)
    values = np.linspace(-1, 1, steps)[:, None].repeat(factors, 1)
    fig = _traversal_grid(images, values, [f"f{j}" for j in range(factors)])
    renderer = fig.canvas.get_renderer()
    axes = fig.axes
    try:
        labels = 0
        for ax in axes:
            box = ax.get_window_extent(renderer)
            for text in ax.texts:
                t = text.get_window_extent(renderer)
                labels += 1
                assert box.x0 <= t.x0 and t.x1 <= box.x1 and box.y0 <= t.y0 and t.y1 <= box.y1
                for other in axes:
                    if other is not ax:
                        assert not t.overlaps(other.get_window_extent(renderer))
        assert labels == steps * factors
    finally:
        plt.close(fig)
