"""Fidelity to the original generator: the shipped reference set, the image metrics, and a
low-sample render of reference latents that must stay above a PSNR floor (bpy).

The floor test renders two reference latents per mode at 16 samples with the reference
denoiser (Cycles seed 0, as the original) and compares with the original's own 512-sample
renders. Measured on the 2-core CPU machine (PSNR of the four images, dB):
- the scene as the facts state it: 46.82 50.78 49.72 46.36 (min 46.4);
- the teapot's faces wound inward (the previous tessellation): 30.26 28.35 31.26 27.67;
- the sun angle 0.1 rad (the previous preset): 41.72 46.68 43.66 42.70 (min 41.7);
- the previous material (Fresnel 1.45, GGX glossy of roughness 0.2): 41.04 42.56 40.00 41.35.
So the minimum must exceed 44 dB. Facts whose effect is below the noise of 16 samples (dither
1.0: min 45.9; a disk area lamp: 46.3) are checked by value in test_scenes.py and in the built
scene by test_blender.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ident3d.errors import DataError
from ident3d.fidelity import REFERENCE_DIR, load_reference, psnr, ssim

#: PSNR floor (dB) of the 16-sample renders; see the module docstring for the measurements.
FLOOR_DB = 44.0


@pytest.mark.parametrize("mode", ["box", "periodic"])
def test_reference_set_is_shipped_whole(mode: str) -> None:
    ref = load_reference(mode)
    assert len(ref) == 8 and ref.images.shape == (8, 224, 224, 3) and ref.images.dtype == np.uint8
    assert ref.latents.shape == (8, 10)
    assert ref.raw_latents.shape == (8, 10 if mode == "box" else 11)
    assert (REFERENCE_DIR / "README.md").is_file()  # the attribution travels with the data
    # the per-channel statistics quoted in its README
    want = {"box": [0.426, 0.261, 0.286], "periodic": [0.354, 0.334, 0.349]}[mode]
    np.testing.assert_allclose(ref.images.mean((0, 1, 2)) / 255, want, atol=6e-4)


def test_unknown_reference_mode_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="no reference renders for mode 'clean'"):
        load_reference("clean")
    with pytest.raises(DataError, match="no reference renders"):
        load_reference("box", tmp_path)


def test_psnr_known_answers() -> None:
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == math.inf
    assert psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-9)  # MSE 1: 48.13 dB
    b = a.copy()
    b[0, 0, 0] = 110  # MSE 100 / 192
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 * 192 / 100), abs=1e-9)


def test_ssim_is_one_for_equal_images_and_drops_with_noise() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    a = np.stack([4 * xx + 40, 4 * yy + 40, 2 * (xx + yy) + 60], -1).astype(np.uint8)
    assert ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert 0.0 < ssim(a, noisy) < 0.6
    # more noise, lower SSIM; a constant offset costs only the luminance term
    noisier = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, noisier) < ssim(a, noisy)
    assert 0.9 < ssim(a, a + 10) < 1.0


@pytest.mark.bpy
def test_low_sample_renders_of_reference_latents_stay_above_the_floor() -> None:
    pytest.importorskip("bpy")
    from ident3d.blender.scene import SceneRenderer

    from ident3d.scenes import load_preset, scene_params

    preset = load_preset("3dident")
    q = {**preset.quality("reference"), "samples": 16}
    r = SceneRenderer(preset.data, q, 224, threads=2)
    try:
        scores = {}
        for mode in ("box", "periodic"):
            ref = load_reference(mode)
            params = scene_params(preset, ref.latents.astype(np.float64), mode)
            for i in (0, 1):
                img = r.render({k: v[i] for k, v in params.items()}, seed=0)
                scores[f"{mode}/{i}"] = psnr(img, ref.images[i])
    finally:
        r.close()
    assert min(scores.values()) > FLOOR_DB, scores
