"""ident3d.render.multimodal: image/text datasets whose captions, latents and images agree."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest

from ident3d import store
from ident3d.cli import main
from ident3d.latents.multimodal import TEXT_INT_COLUMNS, MultimodalSpec
from ident3d.render.multimodal import MultimodalJob, render_multimodal
from ident3d.scenes import load_preset, scene_params
from ident3d.store.multimodal import read_text
from ident3d.text.pairs import multimodal_samples
from ident3d.text.palettes import Palette, color_index_table


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def _job(n: int = 9, renderer: str = "mock", resolution: int = 32, **kw: object) -> MultimodalJob:
    return MultimodalJob(load_preset("multimodal3dident"), "fast", resolution, n, 4,
                         renderer=renderer, **kw)  # fmt: skip


def test_mock_dataset_holds_images_captions_and_latents(tmp_path: Path) -> None:
    job = _job(n=9, shard_size=4)
    render_multimodal(job, tmp_path / "d", workers=0, progress=False)
    ds = store.open_dataset(tmp_path / "d")
    assert len(ds) == 9 and ds.class_names == list(job.spec.shape_names)
    text = read_text(tmp_path / "d")
    image, want = multimodal_samples(job.spec, 0, 9, 4)
    assert text.captions == want.captions and text.color_names == want.color_names
    np.testing.assert_array_equal(text.latents, want.text_latents)
    np.testing.assert_allclose(ds.raw_latents(), image, rtol=1e-6)
    np.testing.assert_array_equal(ds.classes(), image[:, 0])
    # the same dataset in one shard with two workers: identical samples
    job2 = _job(n=9, shard_size=9)
    render_multimodal(job2, tmp_path / "e", workers=2, progress=False)
    ds2 = store.open_dataset(tmp_path / "e")
    np.testing.assert_array_equal(ds2.read_slice(0, 9).images, ds.read_slice(0, 9).images)
    assert read_text(tmp_path / "e").captions == text.captions
    # a second render into it: refused, resumed (nothing to do) or overwritten
    from ident3d.errors import UsageError

    with pytest.raises(UsageError, match="--resume"):
        render_multimodal(_job(n=9, shard_size=4), tmp_path / "d", workers=0, progress=False)
    s = render_multimodal(_job(n=9, shard_size=4), tmp_path / "d", workers=0, progress=False,
                          resume=True)  # fmt: skip
    assert s.samples == 0 and s.complete
    (tmp_path / "d" / "vocab.json").write_text("{}")
    s = render_multimodal(_job(n=9, shard_size=4), tmp_path / "d", workers=0, progress=False,
                          overwrite=True)  # fmt: skip
    assert s.samples == 9 and not (tmp_path / "d" / "vocab.json").exists()
    assert read_text(tmp_path / "d").captions == text.captions


def test_cli_render_and_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["render", "--preset", "multimodal3dident", "--renderer", "mock", "--quiet",
            "--resolution", "32", "--n", "3"]  # fmt: skip
    assert _run([*base, "--out", str(tmp_path / "ok")]) == 0
    assert len(read_text(tmp_path / "ok").captions) == 3
    capsys.readouterr()
    for extra, msg in (
        (["--pairs"], "one image per sample"),
        (["--sigma", "0.2"], "--sigma is not available for image/text presets"),
        (["--jobs", "2"], "--jobs is not available for image/text presets"),
        (["--object", "cube"], "--object is not available"),
    ):
        assert _run([*base, "--out", str(tmp_path / "bad"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], err
    assert not (tmp_path / "bad").exists()
    # a preset with an unknown palette, or a template without a slot: one line naming it
    text = (Path(load_preset("multimodal3dident").path)).read_text()
    for old, new, msg in (
        ('palettes = ["tableau", "css4", "xkcd"]', 'palettes = ["tableau", "rainbow"]',
         "unknown palette 'rainbow'"),
        ("is at the {YPOS}-{XPOS} of the image.", "is at the {YPOS} of the image.",
         "lacks the slot {XPOS}"),
        ("position_dependent_color = false", "position_dependent_color = false\ncolour = 1",
         "unknown key 'multimodal.colour'"),
    ):  # fmt: skip
        bad = tmp_path / "bad.toml"
        bad.write_text(text.replace(old, new))
        argv = [*base, "--out", str(tmp_path / "bad")]
        argv[argv.index("multimodal3dident")] = str(bad)
        assert _run(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0] and str(bad) in err[0], err


def _cell_centres(preset_data: dict, spec: MultimodalSpec, resolution: int) -> dict:
    from ident3d.render.mock import MockRenderer  # its pinhole projection of the preset camera

    cam = MockRenderer(preset_data, {"samples": 1}, resolution)
    return {
        (x, y): np.array(cam.project(np.array([spec.grid[y], spec.grid[x], spec.z]))[:2])
        for x in range(spec.n_grid) for y in range(spec.n_grid)
    }  # fmt: skip


@pytest.mark.bpy
def test_blender_images_show_the_captioned_cell_shape_and_colour(tmp_path: Path) -> None:
    from ident3d.blender.scene import SceneRenderer

    res, n = 48, 12
    job = _job(n=n, renderer="blender", resolution=res)
    render_multimodal(job, tmp_path / "d", workers=0, progress=False)
    ds = store.open_dataset(tmp_path / "d")
    text = read_text(tmp_path / "d")
    raw = ds.raw_latents().astype(np.float64)
    image, _ = multimodal_samples(job.spec, 0, n, 4)
    scene = ds.scene_latents()
    params = scene_params(job.preset, np.asarray(scene, np.float64), job.mode)
    centres = _cell_centres(job.preset.data, job.spec, res)
    col = {c: i for i, c in enumerate(TEXT_INT_COLUMNS)}
    r = SceneRenderer(job.preset.data, job.quality_settings, res, objects=job.objects, threads=2)
    try:
        for i in range(n):
            cap, t = text.captions[i], text.latents[i]
            shape = int(ds.read(i).cls)
            assert f" {job.spec.shape_names[shape]}" in cap  # the rendered class's name
            # the object alone (ground hidden, black world): its silhouette's centroid lies in
            # the cell the caption names
            frame = {k: v[i] for k, v in params.items()}
            r.ground.hide_render = True
            try:
                silhouette = r.render(frame, 1, shape).astype(int).sum(-1) > 30
            finally:
                r.ground.hide_render = False
            yy, xx = np.nonzero(silhouette)
            assert xx.size > 20
            c = np.array([xx.mean() + 0.5, yy.mean() + 0.5])
            x, y = min(centres, key=lambda k: float(((centres[k] - c) ** 2).sum()))
            assert f"{job.spec.y_names[y]}-{job.spec.x_names[x]}" in cap, (i, cap, c)
            # the colour Blender rendered the object with is HSV(h, 1, 1) of the latent, and
            # the caption's colour is its nearest name in the sample's palette
            r.apply(frame, 1, shape)
            rgb = np.array(r._color_socket(r.object_material).default_value[:3])
            np.testing.assert_allclose(rgb, colorsys.hsv_to_rgb(raw[i, 7], 1, 1), atol=1e-6)
            name = Palette.load(job.spec.palettes[t[col["palette"]]]).nearest_names(rgb[None])[0]
            assert f'"{name}"' in cap and color_index_table()[t[col["object_color_index"]]] == name
            # and the stored image is the scene's render of that frame
            assert ds.read(i).images.shape == (res, res, 3)
    finally:
        r.close()
    np.testing.assert_allclose(raw, image, rtol=1e-6)
