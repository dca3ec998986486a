"""Preset loading/validation and the per-sample scene arithmetic of the original generator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from ident3d.latents import LatentModel
from ident3d.scenes import PresetError, list_presets, load_preset, presets_dir, scene_params


def test_bundled_3dident_preset_states_the_original_facts():
    p = load_preset("3dident")
    d = p.data
    assert "3dident" in list_presets()
    assert d["camera"]["location"] == [8.0, 0.0, 8.0] and d["camera"]["lens_mm"] == 35.0
    assert d["camera"]["sensor_width_mm"] == 50.0
    assert d["render"]["resolution"] == 224
    ref = p.quality("reference")
    assert (ref["samples"], ref["denoise"], ref["max_bounces"]) == (512, True, 0)
    assert d["render"]["transparent_max_bounces"] == 8 and d["render"]["blur_glossy"] == 2.0
    assert d["render"]["filter_width"] == 1.5 and d["render"]["view_transform"] == "Standard"
    assert d["sun"]["strength"] == 0.5
    assert d["area_light"]["location"] == [0.0, 0.0, 7.0]
    assert d["area_light"]["power_w"] == pytest.approx(50 * math.pi / 4, abs=0.01)
    assert d["world"]["strength"] == 0.0
    s = d["spotlight"]
    assert (s["power_w"], s["spot_size_deg"], s["spot_blend"], s["shadow_soft_size"]) == (
        3000.0,
        35.0,
        0.1,
        0.5,
    )
    assert (s["radius"], s["height"]) == (4.0, 6.0)
    assert d["ground"]["size"] == 1500.0 and p.object_size == 4.442117
    assert d["object"]["saturation"] == 1.0 and s["saturation"] == 0.8
    assert d["ground"]["saturation"] == 0.6
    assert set(p.mode_names) >= {"box", "periodic", "clean"}
    assert p.mapping("periodic").raw_dim == 11
    # the released 3DIdent's image statistics point to the periodic mode (docs/latents.md)
    assert d["latents"]["default_mode"] == "periodic" and p.mapping().mode == "periodic"


def test_bundled_3dident_preset_states_the_measured_scene_facts():
    # measured in the original's assets with bpy 5.0.1 (reference facts, section 1); each of
    # these changed the pixels by 22-60 dB when wrong
    d = load_preset("3dident").data
    assert (d["camera"]["clip_start"], d["camera"]["clip_end"]) == (0.1, 100.0)
    assert d["sun"]["angle_rad"] == pytest.approx(0.199337, abs=1e-6)
    assert d["sun"]["rotation_deg"] == [0.0, 0.0, 0.0]
    assert (d["area_light"]["shape"], d["area_light"]["size"]) == ("SQUARE", 1.0)
    assert d["render"]["dither_intensity"] == 0.0
    assert d["world"]["color"] == pytest.approx([0.050876] * 3, abs=1e-6)
    m = d["material"]
    assert (m["diffuse_roughness"], m["sheen_distribution"], m["sheen_roughness"]) == (
        0.0,
        "ASHIKHMIN",
        0.6,
    )
    assert m["fresnel_ior"] == pytest.approx(1.4)
    assert (m["glossy_distribution"], m["glossy_color"]) == ("BECKMANN", [0.8, 0.8, 0.8])
    assert m["glossy_roughness"] == pytest.approx(math.sqrt(0.35), abs=1e-6)
    assert m["glossy_fresnel_ior"] == pytest.approx(1.2)
    t = d["teapot"]
    assert (t["scale"], t["rotation_z_deg"], t["origin"]) == (0.9520294, -45.0, [0, 0, 1.42857])


def write_preset(tmp_path: Path, old: str, new: str) -> Path:
    text = (presets_dir() / "3dident.toml").read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_unknown_key_names_key_and_file(tmp_path):
    path = write_preset(tmp_path, "lens_mm = 35.0", "lens_mm = 35.0\nlens_mmm = 3")
    with pytest.raises(PresetError, match=r"bad\.toml.*unknown key 'camera\.lens_mmm'"):
        load_preset(path)


def test_bad_value_names_key(tmp_path):
    path = write_preset(tmp_path, "samples = 512", "samples = -4")
    with pytest.raises(PresetError, match=r"'quality\.reference\.samples' must be >= 1"):
        load_preset(path)
    path = write_preset(tmp_path, 'view_transform = "Standard"', 'view_transform = "Fancy"')
    with pytest.raises(PresetError, match="render.view_transform"):
        load_preset(path)


def test_missing_key_and_bad_toml(tmp_path):
    path = write_preset(tmp_path, "radius = 4.0", "")
    with pytest.raises(PresetError, match="missing key 'spotlight.radius'"):
        load_preset(path)
    bad = tmp_path / "x.toml"
    bad.write_text("[camera\n")
    with pytest.raises(PresetError, match="not valid TOML"):
        load_preset(bad)
    with pytest.raises(PresetError, match="unknown preset"):
        load_preset("no-such-preset")


def test_overrides_are_validated():
    p = load_preset("3dident", **{"render.resolution": 64})
    assert p.data["render"]["resolution"] == 64
    with pytest.raises(PresetError, match="render.resolution"):
        load_preset("3dident", **{"render.resolution": 3})


def test_scene_params_follow_the_original_generator():
    p = load_preset("3dident")
    S = p.object_size
    lat = np.zeros((3, 10))
    lat[0, :3] = [1.0, -2.0, 0.5]
    lat[1, 6] = math.pi / 2  # spotlight on the +x side
    lat[2, 7:] = [-0.1 * 2 * math.pi, 0.25 * 2 * math.pi, 0.0]
    sp = scene_params(p, lat)
    np.testing.assert_allclose(sp["object_location"][0], [1.0, -2.0, 0.5 + S / 2])
    np.testing.assert_allclose(sp["spot_location"][0], [0.0, 4.0, 6.0 + S])
    np.testing.assert_allclose(sp["spot_location"][1], [4.0, 0.0, 6.0 + S], atol=1e-12)
    # object hue -0.1: colorsys gives the out-of-gamut (1, -0.6, 0), rendered as is
    np.testing.assert_allclose(sp["object_color"][2], [1.0, -0.6, 0.0])
    # spotlight hue 0.25 at s=0.8: (0.6, 1, 0.2); ground hue 0 at s=0.6: (1, 0.4, 0.4)
    np.testing.assert_allclose(sp["spot_color"][2], [0.6, 1.0, 0.2])
    np.testing.assert_allclose(sp["ground_color"][2], [1.0, 0.4, 0.4])
    # the clean mode wraps the hue instead
    clean = scene_params(p, lat, mode="clean")
    assert clean["object_color"].min() >= 0


def test_scene_params_on_sampled_latents_are_finite():
    p = load_preset("3dident")
    for mode in p.mode_names:
        m = p.mapping(mode)
        raw = LatentModel(m.default_space()).sample(500, seed=0)
        sp = scene_params(p, m.to_scene(raw), mode=mode)
        assert all(np.isfinite(v).all() and v.shape == (500, 3) for v in sp.values())
