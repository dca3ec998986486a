"""Tests of ident3d.train.config: loss-family options, TOML configs, bad input."""

from __future__ import annotations

import json

import pytest
from train_helpers import TINY, _main_exit, _rows, _run_cli

from ident3d.errors import UsageError
from ident3d.train import load_run, resolve_config


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


@pytest.mark.parametrize(
    "text, key",
    [
        ("[model]\nfoo = 1\n", "model.foo"),
        ("[optim]\nlrr = 0.1\n", "optim.lrr"),
        ("[data]\nsigmaa = 0.1\n", "data.sigmaa"),
        (
            '[loss]\nname = "ensemble"\n[[loss.members]]\nweight = 1.0\nwieght = 2.0\n'
            'loss = {name = "infonce"}\n',
            "loss.members[0].wieght",
        ),
        (
            '[loss]\nname = "ensemble"\n[[loss.members]]\n'
            'loss = {name = "aninfonce", n = 3, tempp = 1.0}\n',
            "loss.members[0].loss.tempp",
        ),
    ],
)
def test_unknown_config_key_names_key_and_file(tmp_path, capsys, text, key):
    """Every key of a --config file is known: an unknown one (inside a known section too)
    is one line naming the key and the file, exit 2, nothing written."""
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    out = tmp_path / "r"
    code, err = _main_exit(["train", "--config", str(toml), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert repr(key) in err and str(toml) in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('steps = "ten"\n', "'steps' must be an integer, got 'ten'"),
        ("steps = 2.5\n", "'steps' must be an integer"),
        ('[optim]\nlr = "fast"\n', "'optim.lr' must be a number"),
        ('[loop]\ncompile = "yes"\n', "'loop.compile' must be true or false"),
        ("optim = 3\n", "'optim' must be a table"),
    ],
)
def test_config_value_of_the_wrong_kind_is_one_line(tmp_path, capsys, text, fragment):
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    out = tmp_path / "r"
    code, err = _main_exit(["train", "--config", str(toml), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and fragment in err and str(toml) in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--lr", "-1"], "--lr must be positive"),
        (["--lr", "0"], "--lr must be positive"),
        (["--lambda-lr", "-1e-3"], "--lambda-lr must be positive"),
        (["--eval-samples", "0"], "eval_samples must be >= 4"),
        (["--num-workers", "-1"], "num_workers must be >= 0"),
        (["--hidden", "16,0"], "--hidden widths must be positive integers"),
    ],
)
def test_bad_option_values_are_one_line(tmp_path, capsys, args, fragment):
    out = tmp_path / "r"
    code, err = _main_exit(["train", *TINY, "--steps", "2", *args, "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


def test_dims_accept_the_parse_dims_syntax(tmp_path):
    """--dims (and data.dims in a config file) read indices, ranges and names as
    ident3d.latents.parse_dims does."""
    base = {"data": {"kind": "synthetic", "n": 10, "space": "box", "conditional": "normal"}}
    for spec, want in (("0-2,5", [0, 1, 2, 5]), ("pos_x,hue_spot", [0, 8]), ("7", [7])):
        cfg = resolve_config({**base, "data": {**base["data"], "dims": spec}})
        assert cfg["data"]["dims"] == want, spec
    assert resolve_config({**base, "data": {**base["data"], "dims": [1, 3]}})["data"]["dims"] == [
        1,
        3,
    ]
    with pytest.raises(UsageError, match="out of range"):
        resolve_config({**base, "data": {**base["data"], "dims": "8-12"}})
    out = tmp_path / "r"
    args = ["train", *TINY, "--steps", "2", "--space", "box", "--conditional", "normal"]
    code, msg = _run_cli([*args, "--dims", "0-1", "--out", str(out)])
    assert code == 0, msg
    assert json.loads((out / "config.json").read_text())["data"]["dims"] == [0, 1]


def test_config_json_keys_are_checked_too(tmp_path, capsys):
    """A run's config.json is a config file as well: --config takes it (JSON), and an unknown
    key in it, or in the config.json that --resume and eval read, is one line naming both."""
    run = tmp_path / "run"
    assert _run_cli(["train", *TINY, "--steps", "2", "--out", str(run)])[0] == 0
    copy = tmp_path / "copy.json"
    copy.write_text((run / "config.json").read_text())
    again = tmp_path / "again"
    code, msg = _run_cli(["train", "--config", str(copy), "--no-progress", "--out", str(again)])
    assert code == 0, msg
    assert json.loads((again / "config.json").read_text()) == json.loads(
        (run / "config.json").read_text()
    )
    cfg = json.loads(copy.read_text())
    cfg["model"]["foo"] = 1
    copy.write_text(json.dumps(cfg))
    code, err = _main_exit(["train", "--config", str(copy), "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "'model.foo'" in err and str(copy) in err and err.count("\n") == 1
    cfg = json.loads((run / "config.json").read_text())
    cfg["loop"]["evry"] = 3
    (run / "config.json").write_text(json.dumps(cfg))
    for args in (
        ["train", "--resume", "--out", str(run)],
        ["eval", "--run", str(run), "--data", "synthetic", "--no-kernel"],
    ):
        code, err = _main_exit(args, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert "'loop.evry'" in err and str(run / "config.json") in err, err
