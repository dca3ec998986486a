"""The CLI frame: help, version, one-line errors with exit status 2, and `ident3d latents`."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ident3d import __version__
from ident3d.cli import main


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_help_and_version(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "latents" in out
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and __version__ in out


def test_help_does_not_import_torch_or_bpy():
    code = (
        "import sys; from ident3d.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
    )
    code += "print('torch' in sys.modules, 'bpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False False")


def test_latents_writes_correct_samples(tmp_path, capsys):
    out = tmp_path / "z.npz"
    args = ["latents", "--n", "20000", "--mode", "box", "--conditional", "normal", "--sigma", "0.1"]
    code, text, _ = run([*args, "--seed", "3", "--out", str(out)], capsys)
    assert code == 0 and "pair distance" in text and "hue_background" in text
    with np.load(out) as f:
        z, zt, scene = f["z"], f["z_tilde"], f["z_scene"]
        cfg = json.loads(str(f["config"]))
    assert z.shape == zt.shape == (20000, 10) and scene.shape == (20000, 2, 10)
    assert z.min() >= -1 and z.max() <= 1 and zt.min() >= -1 and zt.max() <= 1
    assert abs(z.std() - 1 / np.sqrt(3)) < 0.01  # uniform on [-1, 1]
    assert 0.085 < np.std(zt - z) < 0.1  # sigma 0.1, slightly shrunk by truncation
    np.testing.assert_allclose(scene[:, 0, :3], z[:, :3] * 3)
    assert cfg["seed"] == 3 and cfg["latent_model"]["conditional"]["sigma"] == 0.1
    # same seed, same file content
    out2 = tmp_path / "z2.npz"
    run([*args, "--seed", "3", "--out", str(out2)], capsys)
    with np.load(out2) as f:
        assert np.array_equal(f["z"], z)


def test_latents_singles_sphere_and_subset(tmp_path, capsys):
    out = tmp_path / "s.npz"
    code, _, _ = run(
        ["latents", "--n", "100", "--mode", "box", "--conditional", "none", "--out", str(out)],
        capsys,
    )
    assert code == 0
    with np.load(out) as f:
        assert "z_tilde" not in f and f["z"].shape == (100, 10)
    code, _, _ = run(
        ["latents", "--n", "50", "--space", "sphere", "--conditional", "vmf", "--out", str(out)],
        capsys,
    )
    assert code == 0
    with np.load(out) as f:
        np.testing.assert_allclose(np.linalg.norm(f["z_tilde"], axis=1), 1, atol=1e-9)


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--n", "0"], "--n"),
        (["--sigma", "-1"], "--sigma"),
        (["--mode", "box", "--conditional", "vmf"], "sphere"),
        (["--dims", "pos_q"], "unknown factor"),
        (["--preset", "nope"], "unknown preset"),
        (["--mode", "zigzag"], "unknown latent mode"),
        (["--lambdas", "1,2", "--conditional", "anisotropic"], "lambdas"),
    ],
)
def test_latents_bad_input_is_one_line_exit_2(tmp_path, capsys, args, msg):
    out = tmp_path / "z.npz"
    code, _, err = run(["latents", "--n", "10", *args, "--out", str(out)], capsys)
    assert code == 2
    assert err.startswith("error:") and msg in err and err.count("\n") == 1
    assert "Traceback" not in err and not out.exists()


def test_latents_default_mode_is_the_presets_periodic_mode(tmp_path, capsys):
    # the released 3DIdent's image statistics point to the periodic mode (docs/latents.md)
    out = tmp_path / "p.npz"
    code, _, _ = run(["latents", "--n", "200", "--conditional", "none", "--out", str(out)], capsys)
    assert code == 0
    with np.load(out) as f:
        z, scene = f["z"], f["z_scene"]
    assert z.shape == (200, 11)
    np.testing.assert_allclose(np.linalg.norm(z[:, 3:], axis=1), 1.0, atol=1e-9)
    assert scene[:, 2].min() >= 0 and scene[:, 9].min() >= 0  # z in [0, 3], hues in [0, 2 pi)


def test_latents_missing_output_folder(tmp_path, capsys):
    code, _, err = run(["latents", "--out", str(tmp_path / "nope" / "z.npz")], capsys)
    assert code == 2 and "does not exist" in err


def test_latents_with_scm_and_blocks(tmp_path, capsys):
    """ident3d latents --preset 3didentbox --scm 3didentbox-part2: the structured latents, the
    same as the model's; bad combinations are one line."""
    from ident3d.latents import build_structured_model
    from ident3d.scenes import load_preset

    out = tmp_path / "z.npz"
    code, text, err = run(["latents", "--preset", "3didentbox", "--scm", "3didentbox-part2",
                           "--blocks", "content=rotations,style=hues,view=positions",
                           "--n", "500", "--seed", "4", "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert 'marginal: "scm"' in text
    p = load_preset("3didentbox")
    opts = {"conditional": "normal", "sigma": 0.1, "dims": None, "marginal": "uniform"}
    model = build_structured_model(p.data, p.path, kind="box", values=opts,
                                   blocks="content=rotations,style=hues,view=positions",
                                   scm_file="3didentbox-part2")  # fmt: skip
    want = model.sample_pairs(500, 4)
    with np.load(out) as f:
        assert np.array_equal(f["z"], want[:, 0]) and np.array_equal(f["z_tilde"], want[:, 1])
        assert "classes" not in f
    code, _, err = run(["latents", "--space", "box", "--scm", "x.toml", "--out", str(out)], capsys)
    assert code == 2 and "--scm and --blocks act on a preset" in err and err.count("\n") == 1
    code, _, err = run(["latents", "--preset", "causal3dident", "--out", str(out)], capsys)
    assert code == 2 and "--classes K" in err
    code, _, err = run(["latents", "--preset", "causal3dident", "--classes", "7", "--n", "50",
                        "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    with np.load(out) as f:
        assert set(f["classes"].tolist()) <= set(range(7)) and len(f["classes"]) == 50
