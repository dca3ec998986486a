"""The render job and the checks of its inputs: latents, config, ``--latents FILE``, bad input,
a missing bpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from render_helpers import _cli, _job

from ident3d import store
from ident3d.latents import LatentModel
from ident3d.render import job as render_job


def test_job_latents_match_the_latent_model() -> None:
    job = _job(n=20)
    assert job.model is not None
    expect = job.model.sample_pairs(20, 3)
    assert np.array_equal(job.raw_range(0, 20), expect)
    assert np.array_equal(job.raw_range(7, 13), expect[7:13])
    assert job.seeds(0, 3).shape == (3, 2)


def test_render_job_config_is_json_and_excludes_workers() -> None:
    job = _job()
    cfg = job.config()
    assert json.loads(json.dumps(cfg))["latent_model"]["conditional"]["type"] == "normal"
    assert "workers" not in cfg and "shard" not in cfg
    _ = LatentModel  # the job's model is a LatentModel
    assert isinstance(job.model, LatentModel)


def test_latents_file_singles_and_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    single = rng.uniform(-1, 1, (5, 10))
    np.save(tmp_path / "z.npy", single)
    code, out, err = _cli(
        ["render", "--out", str(tmp_path / "s"), "--latents", str(tmp_path / "z.npy"),
         "--renderer", "mock", "--resolution", "24", "--quiet", "--workers", "1", "--mode", "box"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "5 images" in out
    ds = store.open_dataset(tmp_path / "s")
    assert ds.kind == "images" and len(ds) == 5
    np.testing.assert_allclose(ds.raw_latents(), single.astype(np.float32))
    cfg = ds.manifest["config"]["latents_file"]
    assert cfg["sha256"] == store.sha256_file(tmp_path / "z.npy")

    pairs = rng.uniform(-1, 1, (3, 2, 10))
    np.save(tmp_path / "zz.npy", pairs)
    code, out, err = _cli(
        ["render", "--out", str(tmp_path / "p"), "--latents", str(tmp_path / "zz.npy"),
         "--renderer", "mock", "--resolution", "24", "--quiet", "--workers", "1", "--mode", "box"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    ds = store.open_dataset(tmp_path / "p")
    assert ds.kind == "pairs" and len(ds) == 3
    np.testing.assert_allclose(ds.raw_latents(), pairs.astype(np.float32))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "nosuchpreset"], "unknown preset"),
        (["--object", "/no/such/mesh.obj"], "mesh file not found"),
        (["--object", "banana"], "not a built-in shape"),
        (["--resolution", "5"], "--resolution 5 is impossible"),
        (["--resolution", "100000"], "impossible"),
        (["--quality", "ultra"], "unknown quality"),
        (["--mode", "spiral"], "unknown latent mode"),
        (["--shard", "3/2"], "--shard"),
        (["--conditional", "none"], "--singles"),
        (["--latents", "/no/such.npy"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "d"
    code, _, err = _cli(
        ["render", "--out", str(out), "--n", "2", "--renderer", "mock", "--quiet", *extra], capsys
    )
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not (out / store.MANIFEST_NAME).exists()


def test_bad_latents_file_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "z.npy", np.zeros((4, 7)))
    code, _, err = _cli(
        ["render", "--out", str(tmp_path / "d"), "--latents", str(tmp_path / "z.npy"),
         "--renderer", "mock", "--mode", "box"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "(N, 10)" in err
    # box-mode latents given in the default (periodic) mode: the error says which mode fits
    np.save(tmp_path / "box.npy", np.zeros((4, 10)))
    code, _, err = _cli(
        ["render", "--out", str(tmp_path / "d"), "--latents", str(tmp_path / "box.npy"),
         "--renderer", "mock"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "(N, 11)" in err and "--mode box" in err and err.count("\n") == 1


def test_missing_bpy_tells_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = render_job.importlib.util.find_spec
    monkeypatch.setattr(
        render_job.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bpy" else real(name, *a),
    )
    code, _, err = _cli(["render", "--out", str(tmp_path / "d"), "--n", "2"], capsys)
    assert code == 2 and "pip install 'ident3d[render]'" in err
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ SCM, blocks, views


BOX_ARGS = ["--preset", "3didentbox", "--renderer", "mock", "--quiet", "--resolution", "16"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--blocks", "content=colours"], "unknown block 'colours'"),
        (["--blocks", "content=hues,style=hues"], "assigned twice"),
        (["--blocks", "middle=hues"], "ROLE one of content, style, view"),
        (["--scm", "/no/such.toml"], "--scm /no/such.toml: file not found"),
        (["--blocks", "content=hues", "--dims", "pos_x"], "--dims and --blocks"),
        (["--mode", "periodic", "--preset", "3dident", "--blocks", "content=x"], "box-kind"),
        (["--marginal", "normal"], "--marginal applies to independent latents"),
    ],
)
def test_bad_structure_options_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "d"
    code, _, err = _cli(["render", "--out", str(out), "--n", "2", *BOX_ARGS, *extra], capsys)
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[factors.pos_x]\nlaw = 'normal'\nparents = ['pos_y']\nscale = 1\n"
         "[factors.pos_y]\nlaw = 'normal'\nparents = ['pos_x']\nscale = 1\n", "cycle"),
        ("[factors.pos_q]\nlaw = 'uniform'\n", "unknown factor 'pos_q'"),
        ("[factors.pos_x]\nlaw = 'normal'\nparents = ['pos_y']\nscale = -1\n", "scale must"),
        ("[factors.pos_x]\nlaw = 'uniform'\nlow = 0\nhigh = 1\nmean = 3\n", "unknown key 'mean'"),
        ("[factors]\npos_x = 3\n", "factor pos_x must be a table"),
        ("[factors.pos_x\n", "not valid TOML"),
        ("[factors.object_class]\nlaw = 'categorical'\n", "two or more --object"),
    ],
)  # fmt: skip
def test_bad_scm_files_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    out = tmp_path / "d"
    code, _, err = _cli(
        ["render", "--out", str(out), "--n", "2", *BOX_ARGS, "--scm", str(f)], capsys
    )
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not out.exists()


def test_scm_and_latents_file_exclude_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "z.npy", np.zeros((2, 10)))
    code, _, err = _cli(
        ["render", "--out", str(tmp_path / "d"), *BOX_ARGS, "--latents", str(tmp_path / "z.npy"),
         "--blocks", "content=hues"], capsys,
    )  # fmt: skip
    assert code == 2 and "--latents renders given latents" in err


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[views.2.material]\nname = 'x'\n", "unknown view [views.2]"),
        ("[views.0.camera]\nlens_mm = 20\n", "unknown section [views.0.camera]"),
        ("[views.0.object]\nsize = 2\n", "unknown key 'views.0.object.size'"),
        ("[views.1.material]\ntype = 'metal'\nname = 'm'\n", "missing key 'views.1.material.roughness_1'"),
        ("[blocks.a]\nfactors = ['pos_x']\nwhat = 1\n", "unknown key 'what'"),
        ("[pairs]\nstyle_sigma = 0\n", "'pairs.style_sigma' must be >="),
        ("[scm]\nfoo = 1\n", "[scm] must hold only"),
    ],
)  # fmt: skip
def test_bad_preset_structure_sections_name_key_and_file(
    tmp_path: Path, toml: str, message: str
) -> None:
    from ident3d.scenes import PresetError, load_preset, presets_dir

    f = tmp_path / "p.toml"
    f.write_text((presets_dir() / "3dident.toml").read_text() + "\n" + toml)
    with pytest.raises(PresetError) as exc:
        load_preset(f)
    assert str(exc.value).startswith(str(f)) and message in str(exc.value)
