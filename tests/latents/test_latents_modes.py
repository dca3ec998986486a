"""Tests of ident3d.latents.modes: raw latents -> scene units, against the original generator."""

from __future__ import annotations

import colorsys
import math
from pathlib import Path

import numpy as np
import pytest
from latents_helpers import rng

from ident3d.errors import UsageError
from ident3d.latents import (
    LatentMapping,
    LatentModel,
    Sphere,
    Uniform,
    hsv_to_rgb,
    sphere_angles,
)

REFERENCE = Path(__file__).resolve().parent.parent.parent / "reference" / "orig-renders"


def test_box_mapping_matches_original_arithmetic():
    m = LatentMapping.from_preset_mode(
        "box", {"kind": "box", "position_scale": 3.0, "angle_scale_turns": 0.25, "hue": "colorsys"}
    )
    raw = rng(16).uniform(-1, 1, (100, 10))
    sc = m.to_scene(raw)
    np.testing.assert_allclose(sc[:, :3], raw[:, :3] * 3)
    np.testing.assert_allclose(sc[:, 3:], raw[:, 3:] * math.pi / 2)
    with pytest.raises(UsageError, match="expects 10 raw columns"):
        m.to_scene(np.zeros((2, 11)))


def test_periodic_mapping_angles_span_full_circles():
    m = LatentMapping.from_preset_mode(
        "periodic",
        {"kind": "periodic", "position_scale": 3.0, "z_range": [0, 3], "hue": "colorsys"},
    )
    raw = LatentModel(m.default_space()).sample(20_000, seed=3)
    sc = m.to_scene(raw)
    assert sc[:, 2].min() >= 0 and sc[:, 2].max() <= 3
    np.testing.assert_allclose(sc[:, 2], (raw[:, 2] + 1) * 1.5)
    ang = sc[:, 3:]
    assert ang[:, :6].min() >= 0 and ang[:, :6].max() <= 2 * math.pi
    assert ang[:, :6].max() > 1.9 * math.pi and ang[:, :6].min() < 0.1 * math.pi
    # the last angle (background hue) as the original computes it: [0, 2 pi), never negative
    assert ang[:, 6].min() >= 0 and ang[:, 6].max() < 2 * math.pi
    assert ang[:, 6].min() < 0.1 and ang[:, 6].max() > 2 * math.pi - 0.1
    # about half the samples (s_8 <= 0) lie in the upper half circle
    assert 0.45 < np.mean(ang[:, 6] > math.pi) < 0.55


def test_periodic_mapping_matches_the_original_generators_latents():
    # reference/orig-renders/periodic: raw (8 x 11) and scene (8 x 10) latents that the
    # original generator itself computed (float32); positions and all seven angles must agree
    from ident3d.scenes import load_preset

    ref = REFERENCE / "periodic"
    raw = np.load(ref / "raw_latents.npy")
    want = np.load(ref / "latents.npy")
    got = load_preset("3dident").mapping("periodic").to_scene(raw)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # at least one sample's background hue lies in (pi, 2 pi), where (-pi, pi] would differ
    assert (want[:, 9] > math.pi).any()


def test_box_mapping_matches_the_original_generators_latents():
    from ident3d.scenes import load_preset

    ref = REFERENCE / "box"
    got = load_preset("3dident").mapping("box").to_scene(np.load(ref / "raw_latents.npy"))
    np.testing.assert_allclose(got, np.load(ref / "latents.npy"), atol=2e-6)


def test_sphere_angles_invert_to_the_point():
    s = Uniform().sample(Sphere(8), 100, rng(17))
    a = sphere_angles(s)
    phi = a.copy()
    phi[:, :6] /= 2  # undo the doubling
    rec = np.empty_like(s)
    sin_prod = np.ones(len(s))
    for k in range(6):
        rec[:, k] = sin_prod * np.cos(phi[:, k])
        sin_prod = sin_prod * np.sin(phi[:, k])
    rec[:, 6] = sin_prod * np.cos(phi[:, 6])
    rec[:, 7] = sin_prod * np.sin(phi[:, 6])  # phi_7 in [0, 2 pi): sin < 0 where s_8 < 0
    np.testing.assert_allclose(rec, s, atol=1e-10)


def test_hsv_is_bit_for_bit_colorsys_including_negative_hues():
    h = rng(18).uniform(-1.2, 1.7, 2000)
    for s, v in [(1.0, 1.0), (0.8, 1.0), (0.6, 1.0), (0.0, 0.5)]:
        ours = hsv_to_rgb(h, s, v, "colorsys")
        ref = np.array([colorsys.hsv_to_rgb(x, s, v) for x in h])
        assert np.array_equal(ours, ref)
    # the facts document's example: out of gamut, rendered as is
    np.testing.assert_allclose(hsv_to_rgb(np.array([-0.1]), 1.0, 1.0)[0], [1.0, -0.6, 0.0])


def test_wrap_hue_is_always_in_gamut():
    h = rng(19).uniform(-2, 2, 2000)
    rgb = hsv_to_rgb(h, 0.8, 1.0, "wrap")
    assert rgb.min() >= 0 and rgb.max() <= 1
    np.testing.assert_allclose(rgb, hsv_to_rgb(np.mod(h, 1.0), 0.8, 1.0, "colorsys"))
