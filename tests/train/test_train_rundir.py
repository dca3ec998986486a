"""Tests of ident3d.train.rundir: write errors (an injected ENOSPC), damaged config.json,
leftovers of a killed run, --out naming a file."""

from __future__ import annotations

import builtins
import errno
import json
from pathlib import Path

import pytest
import torch
from train_helpers import TINY, _main_exit, _rows, _run_cli

from ident3d.train import metrics_log, rundir

ARGS = [*TINY, "--steps", "8", "--checkpoint-every", "2", "--eval-every", "4", "--log-every", "1"]


def _full_disk(monkeypatch, module, when) -> list[Path]:
    """Make ``open(path, "w...")``/``"a"`` in ``module`` fail with ENOSPC when ``when(path)``
    (after creating the file, as a real write that runs out of space does)."""
    real_open = builtins.open
    hits: list[Path] = []

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if any(c in mode for c in "wa") and when(Path(path)):
            f.close()
            hits.append(Path(path))
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr(module, "open", fake_open, raising=False)
    return hits


def _temps(run: Path) -> list[Path]:
    return [p for p in run.rglob(".*")] if run.exists() else []


def test_full_disk_writing_config_leaves_nothing(tmp_path, capsys, monkeypatch):
    hits = _full_disk(monkeypatch, rundir, lambda p: "config.json" in p.name)
    out = tmp_path / "run"
    code, err = _main_exit(["train", *ARGS, "--out", str(out)], capsys)
    assert hits and code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: cannot write ") and str(out / "config.json") in err
    assert "No space left" in err and not out.exists()
    # an existing empty directory stays, empty
    out.mkdir()
    code, err = _main_exit(["train", *ARGS, "--out", str(out)], capsys)
    assert code == 2 and list(out.iterdir()) == []


def test_full_disk_writing_a_checkpoint_leaves_a_resumable_run(tmp_path, capsys, monkeypatch):
    hits = _full_disk(monkeypatch, rundir, lambda p: "step-00000004" in p.name)
    out = tmp_path / "run"
    code, err = _main_exit(["train", *ARGS, "--out", str(out)], capsys)
    assert hits and code == 2 and err.count("\n") == 1, err
    assert "cannot write" in err and "step-00000004.pt" in err
    assert _temps(out) == []  # the temporary checkpoint is gone
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    monkeypatch.undo()
    assert _run_cli(["train", "--resume", "--no-progress", "--out", str(out)])[0] == 0
    clean = tmp_path / "clean"
    assert _run_cli(["train", *ARGS, "--out", str(clean)])[0] == 0
    assert _rows(out, "train") == _rows(clean, "train")
    assert _rows(out, "eval") == _rows(clean, "eval")


def test_full_disk_writing_metrics_is_one_line_and_resumable(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}

    def when(p: Path) -> bool:
        calls["n"] += p.name == "metrics.jsonl"
        return p.name == "metrics.jsonl" and calls["n"] > 4

    _full_disk(monkeypatch, metrics_log, when)
    out = tmp_path / "run"
    code, err = _main_exit(["train", *ARGS, "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and str(out / "metrics.jsonl") in err, err
    monkeypatch.undo()
    assert _run_cli(["train", "--resume", "--no-progress", "--out", str(out)])[0] == 0
    assert [r["step"] for r in _rows(out, "train")] == list(range(1, 9))


def test_atomic_write_removes_its_temp_file_on_any_error(tmp_path, monkeypatch):
    def boom(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(rundir.os, "fsync", boom)
    with pytest.raises(OSError, match="Input/output"):  # not the user's to fix: kept as is
        rundir._atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{", "is not valid JSON"),
        ("[1, 2]", "is not an ident3d run config"),
        ('{"format": "ident3d-run/1"}', "lacks steps"),
    ],
)
def test_damaged_config_json_is_one_line(tmp_path, capsys, text, fragment):
    out = tmp_path / "run"
    assert _run_cli(["train", *TINY, "--steps", "2", "--out", str(out)])[0] == 0
    (out / "config.json").write_text(text)
    for args in (
        ["train", "--resume", "--out", str(out)],
        ["eval", "--run", str(out), "--data", "synthetic", "--no-kernel"],
    ):
        code, err = _main_exit(args, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert str(out / "config.json") in err and fragment in err, err


def test_leftovers_of_a_run_killed_before_its_config(tmp_path):
    """A run killed between creating checkpoints/ and renaming config.json into place
    leaves an empty checkpoints/ and a temp file: a new run may start there."""
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / ".config.json.tmp12345").write_text("{")
    (out / "checkpoints" / ".last.pt.tmp12345").write_bytes(b"x")
    assert _run_cli(["train", *TINY, "--steps", "2", "--out", str(out)])[0] == 0
    assert _temps(out) == [] and json.loads((out / "config.json").read_text())["steps"] == 2


def test_out_naming_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("")
    code, err = _main_exit(["train", *TINY, "--steps", "2", "--out", str(f)], capsys)
    assert code == 2 and err.count("\n") == 1 and "file" in err
    with pytest.raises(Exception, match="is a file"):
        rundir._open_run_dir({}, f, resume=True)
