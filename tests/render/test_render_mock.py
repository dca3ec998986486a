"""The mock renderer (pure numpy) responds to the factors."""

from __future__ import annotations

import numpy as np

from ident3d import render as R
from ident3d.scenes import load_preset


def test_mock_renderer_factor_effects() -> None:
    """The mock's pictures respond to the factors (so pipeline tests see real differences)."""
    preset = load_preset("3dident")
    r = R.MockRenderer(preset.data, preset.quality("fast"), 48)
    from ident3d.scenes import scene_params

    base = np.zeros((1, 10))
    moved = base.copy()
    moved[0, 1] = 2.0
    p0 = scene_params(preset, base, "box")
    p1 = scene_params(preset, moved, "box")
    a = r.render({k: v[0] for k, v in p0.items()}, 0)
    b = r.render({k: v[0] for k, v in p1.items()}, 0)
    assert a.shape == (48, 48, 3) and not np.array_equal(a, b)
