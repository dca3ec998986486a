"""Tests of ident3d.eval.run (ident3d eval): synthetic and image runs, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from eval_helpers import _main, _train
from PIL import Image

from ident3d.cli import cli
from ident3d.latents import FACTOR_NAMES


def _write_3dident_folder(root: Path, n: int = 40, size: int = 32, seed: int = 0) -> np.ndarray:
    """An original-layout 3DIdent folder whose image colours depend on the latents."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, size=(n, 10)).astype(np.float32)
    (root / "images").mkdir(parents=True)
    digits = max(1, int(np.ceil(np.log10(n))))
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        img[..., 0] = int(127 + 120 * z[i, 7])
        img[..., 1] = int(127 + 120 * z[i, 8])
        img[: size // 2, :, 2] = int(127 + 120 * z[i, 0])
        Image.fromarray(img).save(root / "images" / f"{i:0{digits}d}.png")
    np.save(root / "raw_latents.npy", z)
    return z


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> tuple[Path, Path]:
    """A small image folder and a ResNet18 run trained on it for two steps."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("img")
    data = base / "data"
    _write_3dident_folder(data)
    run = _train(
        {
            "data": {"kind": "dataset", "path": str(data)},
            "steps": 2,
            "batch_size": 8,
            "loop": {"checkpoint_every": 1, "eval_every": 0, "threads": 1, "num_workers": 0},
        },
        base / "run",
    )
    return run, data


def _invoke(args: list[str]):
    return CliRunner().invoke(cli, args, standalone_mode=False, catch_exceptions=True)


def test_cli_eval_synthetic_run(synthetic_run, tmp_path, capsys):
    out = tmp_path / "rep"
    code, stdout, err = _main(
        [
            "eval",
            "--run",
            str(synthetic_run),
            "--data",
            "synthetic",
            "--samples",
            "500",
            "--kernel-fit",
            "250",
            "--out",
            str(out),
            "--no-progress",
        ],
        capsys,
    )
    assert code == 0, err
    assert "z0" in stdout and "mean" in stdout and "lambda: mean relative error" in stdout
    rep = json.loads((out / "report.json").read_text())
    for key in ("linear_r2", "kernel_r2", "mcc_pearson", "mcc_spearman", "per_factor"):
        assert key in rep
    assert [f["name"] for f in rep["per_factor"]] == ["z0", "z1", "z2"]
    assert rep["source"]["step"] == 20 and rep["source"]["loss"] == "aninfonce"
    assert rep["dataset"] == {
        "kind": "synthetic",
        "seed": 0,
        "n": 500,
        "space": "extended_sphere",
        "conditional": "anisotropic",
        "latent_dim": 3,
    }
    lam = rep["lambda"]
    np.testing.assert_allclose(lam["true"], [5.0, 15.0, 25.0])
    assert len(lam["learned_matched"]) == 3 and lam["matching"] == rep["mcc_matching"]["pearson"]
    assert {"lambdas.png", "r2_bars.png", "pred_kernel.png"} <= {p.name for p in out.iterdir()}

    # the same samples again (same seed) give the same numbers; another checkpoint another step
    code, _, err = _main(
        [
            "eval",
            "--checkpoint",
            str(synthetic_run / "checkpoints" / "step-00000010.pt"),
            "--data",
            "synthetic",
            "--samples",
            "500",
            "--no-kernel",
            "--out",
            str(tmp_path / "rep10"),
        ],
        capsys,
    )
    assert code == 0, err
    rep10 = json.loads((tmp_path / "rep10" / "report.json").read_text())
    assert rep10["source"]["step"] == 10 and rep10["kernel_r2"] is None
    assert rep10["linear_r2"] != rep["linear_r2"]

    # compare the two reports: one table, one figure
    code, stdout, err = _main(
        ["eval", "--compare", str(out), str(tmp_path / "rep10"), "--out", str(tmp_path / "cmp")],
        capsys,
    )
    assert code == 0, err
    assert "an3@20" in stdout and "an3@10" in stdout and "l:z0" in stdout
    assert (tmp_path / "cmp" / "compare.png").is_file()
    assert "an3@20" in (tmp_path / "cmp" / "compare.md").read_text()


def test_cli_eval_image_dataset(image_run, tmp_path, capsys):
    run, data = image_run
    out = tmp_path / "rep"
    code, stdout, err = _main(
        [
            *("eval", "--run", str(run), "--data", str(data), "--out", str(out)),
            *("--kernel-fit", "20", "--batch-size", "16", "--no-progress", "--block", "hues=7,8,9"),
            *("--samples", "36"),
        ],
        capsys,
    )
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert [f["name"] for f in rep["per_factor"]] == list(FACTOR_NAMES)
    assert rep["dataset"]["layout"] == "3dident" and rep["dataset"]["n"] == 36
    assert rep["dataset"]["n_total"] == 40 and rep["protocol"]["linear"]["n_score"] == 18
    assert rep["source"]["step"] == 2 and rep["protocol"]["kernel"]["n_fit"] == 20
    assert rep["blocks"]["hues"]["factors"] == [7, 8, 9]
    assert "hue_background" in stdout
    assert "| 9 | hue_background |" in (out / "report.md").read_text()


def test_cli_eval_pairs_store_uses_first_view(image_run, tmp_path, capsys):
    from ident3d.latents import factor_table
    from ident3d.store import ShardWriter, create_dataset

    run, _ = image_run
    root = tmp_path / "pairs"
    n = 12
    rng = np.random.default_rng(1)
    raw = rng.uniform(-1, 1, size=(n, 2, 10)).astype(np.float32)
    images = rng.integers(0, 256, size=(n, 2, 32, 32, 3), dtype=np.uint8)
    create_dataset(root, "pairs", n, n, 32, 32, 10, {"test": True}, factor_table())
    with ShardWriter(root, 0, 0, n, "pairs", 32, 32, 10) as w:
        w.write_batch(0, images, raw, raw)
    code, _, err = _main(
        [
            "eval",
            "--run",
            str(run),
            "--data",
            str(root),
            "--no-kernel",
            "--out",
            str(tmp_path / "r"),
        ],
        capsys,
    )
    assert code == 0, err
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["dataset"]["view"] == 0 and rep["dataset"]["layout"] == "store"
    assert rep["n_samples"] == n and rep["per_factor"][0]["name"] == "pos_x"


def _one_line_exit_2(args: list[str], capsys, match: str) -> None:
    code, _, err = _main(args, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]


def test_bad_input(synthetic_run, image_run, tmp_path, capsys):
    run_img, data = image_run
    # a checkpoint that does not match its run's encoder
    bad = tmp_path / "bad"
    (bad / "checkpoints").mkdir(parents=True)
    cfg = json.loads((synthetic_run / "config.json").read_text())
    cfg["model"]["hidden"] = [8]
    (bad / "config.json").write_text(json.dumps(cfg))
    os.link(synthetic_run / "checkpoints" / "last.pt", bad / "checkpoints" / "last.pt")
    _one_line_exit_2(["eval", "--run", str(bad), "--data", "synthetic"], capsys, "does not match")
    # not a checkpoint at all
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    _one_line_exit_2(["eval", "--checkpoint", str(junk), "--data", "synthetic"], capsys, "junk.pt")
    # a dataset without latents
    nolat = tmp_path / "nolat"
    _write_3dident_folder(nolat, n=8)
    (nolat / "raw_latents.npy").unlink()
    _one_line_exit_2(["eval", "--run", str(run_img), "--data", str(nolat)], capsys, "nolat")
    # too few samples for the split
    _one_line_exit_2(
        ["eval", "--run", str(run_img), "--data", str(data), "--samples", "3"],
        capsys,
        "too few samples",
    )
    _one_line_exit_2(
        [
            *("eval", "--run", str(synthetic_run), "--data", "synthetic", "--samples", "100"),
            *("--kernel-fit", "99"),
        ],
        capsys,
        "too few samples",
    )
    # wrong data for the run, missing options, missing report
    _one_line_exit_2(
        ["eval", "--run", str(synthetic_run), "--data", str(data)], capsys, "--data synthetic"
    )
    _one_line_exit_2(["eval", "--run", str(run_img), "--data", "synthetic"], capsys, "--data DIR")
    _one_line_exit_2(["eval", "--data", "synthetic"], capsys, "--run")
    _one_line_exit_2(["eval", "--run", str(synthetic_run)], capsys, "--data")
    _one_line_exit_2(
        ["eval", "--compare", str(tmp_path), str(tmp_path)], capsys, "has no report.json"
    )
    _one_line_exit_2(["eval", "--compare", str(tmp_path)], capsys, "at least two")
    _one_line_exit_2(
        ["eval", "--run", str(synthetic_run), "--data", "synthetic", "--block", "x=z7"],
        capsys,
        "neither a factor name",
    )


def test_eval_command_registered():
    res = _invoke(["eval", "--help"])
    assert res.exit_code == 0 and "--compare" in res.output and "--data" in res.output


def _pairs_store(root: Path, n: int = 12) -> None:
    from ident3d.latents import factor_table
    from ident3d.store import ShardWriter, create_dataset

    rng = np.random.default_rng(1)
    raw = rng.uniform(-1, 1, size=(n, 2, 10)).astype(np.float32)
    images = rng.integers(0, 256, size=(n, 2, 32, 32, 3), dtype=np.uint8)
    create_dataset(root, "pairs", n, n, 32, 32, 10, {"test": True}, factor_table())
    with ShardWriter(root, 0, 0, n, "pairs", 32, 32, 10) as w:
        w.write_batch(0, images, raw, raw)


@pytest.mark.parametrize("edit", [("height", 16), ("kind", "images")], ids=["height", "kind"])
def test_eval_on_a_manifest_that_does_not_match_its_shards(image_run, tmp_path, capsys, edit):
    run, _ = image_run
    root = tmp_path / "pairs"
    _pairs_store(root)
    m = json.loads((root / "manifest.json").read_text())
    m[edit[0]] = edit[1]
    (root / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "rep"
    _one_line_exit_2(
        ["eval", "--run", str(run), "--data", str(root), "--no-kernel", "--out", str(out)],
        capsys,
        f"shard {root / 'shard-00000.h5'} holds images of shape",
    )
    assert not out.exists()


def test_eval_out_naming_a_file(synthetic_run, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    _one_line_exit_2(
        ["eval", "--run", str(synthetic_run), "--data", "synthetic", "--out", str(f)],
        capsys,
        "is a file",
    )
    assert f.read_text() == "x"


def test_eval_block_ranges_as_parse_dims(image_run, tmp_path, capsys):
    """--block takes the ident3d.latents.parse_dims syntax: names, indices and ranges."""
    from ident3d.eval import resolve_blocks

    names = list(FACTOR_NAMES)
    assert resolve_blocks({"pos": ["0-2"], "mix": ["hue_spot", "3-4", "0"]}, names) == {
        "pos": [0, 1, 2],
        "mix": [8, 3, 4, 0],
    }
    assert resolve_blocks({"b": "7-9"}, names) == {"b": [7, 8, 9]}
    with pytest.raises(Exception, match="range a-b below 10"):
        resolve_blocks({"b": ["8-12"]}, names)
    run, data = image_run
    out = tmp_path / "rep"
    code, _, err = _main(
        [*("eval", "--run", str(run), "--data", str(data), "--out", str(out), "--no-kernel"),
         *("--block", "pos=0-2", "--block", "hues=hue_object,8-9")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["blocks"]["pos"]["factors"] == [0, 1, 2]
    assert rep["blocks"]["hues"]["factors"] == [7, 8, 9]


def test_eval_huge_sizes_are_one_line(synthetic_run, tmp_path, capsys):
    out = tmp_path / "rep"
    _one_line_exit_2(
        ["eval", "--run", str(synthetic_run), "--data", "synthetic", "--samples", str(10**13),
         "--out", str(out)],
        capsys,
        f"--samples {10**13} needs",
    )  # fmt: skip
    _one_line_exit_2(
        ["eval", "--run", str(synthetic_run), "--data", "synthetic", "--samples", "100",
         "--kernel-fit", str(10**7), "--out", str(out)],
        capsys,
        f"--kernel-fit {10**7} needs",
    )  # fmt: skip
    assert not out.exists()
