"""ident3d.latents.multimodal: the Multimodal3DIdent latent distribution and scene units."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from ident3d.errors import UsageError
from ident3d.latents.model import BLOCK_SIZE
from ident3d.latents.multimodal import (
    IMAGE_COLUMNS,
    MultimodalSpec,
    multimodal_scene_latents,
    sample_multimodal,
)
from ident3d.scenes import load_preset


@pytest.fixture(scope="module")
def spec() -> MultimodalSpec:
    return MultimodalSpec.from_preset(load_preset("multimodal3dident").data)


def test_sample_i_does_not_depend_on_the_range(spec: MultimodalSpec) -> None:
    whole = sample_multimodal(spec, 0, BLOCK_SIZE + 50, seed=5)
    part = sample_multimodal(spec, BLOCK_SIZE - 20, BLOCK_SIZE + 10, seed=5)
    for k in whole:
        np.testing.assert_array_equal(whole[k][BLOCK_SIZE - 20 : BLOCK_SIZE + 10], part[k])
    other = sample_multimodal(spec, 0, 10, seed=6)
    assert not np.array_equal(other["image"], whole["image"][:10])


def test_distribution(spec: MultimodalSpec) -> None:
    d = sample_multimodal(spec, 0, 6000, seed=1)
    z = d["image"]
    assert z.shape == (6000, len(IMAGE_COLUMNS))
    assert set(np.unique(z[:, 0])) == set(range(7))
    assert set(np.unique(z[:, 1])) == {0, 1, 2} and set(np.unique(z[:, 2])) == {0, 1, 2}
    assert (z[:, 3] == 0).all()
    cont = z[:, 4:]
    assert cont.min() >= 0 and cont.max() < 1
    np.testing.assert_allclose(cont.mean(0), 0.5, atol=0.02)
    assert np.abs(np.corrcoef(z[:, 1], z[:, 7])[0, 1]) < 0.05  # hue independent of x
    assert set(np.unique(d["phrasing"])) == set(range(5))
    assert set(np.unique(d["palette"])) == {0, 1, 2}


def test_position_dependent_colour(spec: MultimodalSpec) -> None:
    dep = dataclasses.replace(spec, position_dependent_color=True)
    z = sample_multimodal(dep, 0, 3000, seed=1)["image"]
    for x in range(3):  # hue = (x + U) / 3
        h = z[z[:, 1] == x, 7]
        assert h.min() >= x / 3 and h.max() < (x + 1) / 3


def test_scene_units(spec: MultimodalSpec) -> None:
    z = np.array([[3, 0, 2, 0, 0.0, 0.5, 1.0, 0.25, 0.0, 0.0, 1.0]])
    s = multimodal_scene_latents(spec, z)[0]
    assert s[0] == 3.0 and s[1] == -3.0 and s[2] == 0.0  # x = grid[ypos], y = grid[xpos]
    np.testing.assert_allclose(s[3:6], [-math.pi / 2, 0.0, math.pi / 2])
    assert s[6] == pytest.approx(-math.pi / 2)
    assert s[7] == pytest.approx(2 * math.pi * 0.25)
    assert s[8] == pytest.approx(2 * math.pi * -0.25) and s[9] == pytest.approx(2 * math.pi * 0.25)
    with pytest.raises(UsageError, match="grid"):
        multimodal_scene_latents(spec, np.array([[0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0.0]]))


def test_spec_needs_a_multimodal_preset() -> None:
    with pytest.raises(UsageError, match="not an image/text preset"):
        MultimodalSpec.from_preset(load_preset("3dident").data)
