"""Tests of ident3d.train.config: loss-family options, TOML configs, bad input."""

from __future__ import annotations

import json

from train_helpers import TINY, _main_exit, _rows, _run_cli

from ident3d.train import load_run


def test_loss_family_options_train(tmp_path):
    for i, extra in enumerate(
        [["--similarity", "lp", "--p", "1", "--negatives", "cross"],
         ["--similarity", "cosine", "--temperature", "0.1", "--hard-negative-beta", "1.0"],
         ["--space", "box", "--conditional", "laplace", "--constraint", "box", "--similarity",
          "lp", "--p", "3"],
         ["--space", "unbounded", "--marginal", "normal", "--conditional", "normal",
          "--constraint", "none", "--similarity", "lp"]]
    ):  # fmt: skip
        out = tmp_path / f"r{i}"
        code, msg = _run_cli(
            ["train", *TINY, "--steps", "4", "--eval-every", "4", "--out", str(out), *extra]
        )
        assert code == 0, msg
        assert _rows(out, "eval")[-1]["step"] == 4


def test_ensemble_from_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        'steps = 5\nbatch_size = 16\n[loss]\nname = "ensemble"\n'
        '[[loss.members]]\nweight = 0.5\nloss = {name = "infonce", similarity = "lp", p = 1.0}\n'
        "[[loss.members]]\nweight = 1.0\n"
        'loss = {name = "aninfonce", n = 3}\n'
        "[data]\nn = 3\n[model]\nhidden = [8]\n[loop]\neval_every = 5\nthreads = 1\n"
    )
    out = tmp_path / "r"
    code, msg = _run_cli(["train", "--config", str(toml), "--no-progress", "--out", str(out)])
    assert code == 0, msg
    cfg = json.loads((out / "config.json").read_text())
    assert [m["loss"]["name"] for m in cfg["loss"]["members"]] == ["infonce", "aninfonce"]
    run = load_run(out)
    assert run.lambdas is not None and run.lambdas.shape == (3,)
    assert "lambda" in _rows(out, "train")[0]


def test_bad_synthetic_input_exits_2(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "x").write_text("")
    code, err = _main_exit(["train", *TINY, "--steps", "2", "--out", str(out)], capsys)
    assert code == 2 and "not empty" in err
    code, err = _main_exit(["train", *TINY, "--space", "box", "--conditional", "vmf",
                            "--out", str(tmp_path / "s")], capsys)  # fmt: skip
    assert code == 2 and "sphere" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[loop]\nevals = 3\n")
    code, err = _main_exit(["train", "--config", str(bad), "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "loop.evals" in err
    code, err = _main_exit(["train", "--resume", "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "config.json" in err
    code, err = _main_exit(["train", *TINY, "--lr-schedule", "cosine", "--min-lr-ratio", "2",
                            "--out", str(tmp_path / "u")], capsys)  # fmt: skip
    assert code == 2 and "min_lr_ratio" in err and not (tmp_path / "u").exists()
