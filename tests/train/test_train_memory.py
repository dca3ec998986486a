"""Tests of ident3d.train.memory: sizes that cannot fit are refused before anything is
written."""

from __future__ import annotations

import pytest
import torch
from train_helpers import TINY, _main_exit

from ident3d.errors import UsageError
from ident3d.train import check_sizes, memory, resolve_config


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--batch-size", str(10**9)], f"--batch-size {10**9} needs"),
        (["--hidden", f"{10**7},{10**7}"], "--hidden/--n"),
        (["--eval-samples", str(10**12)], f"--eval-samples {10**12}"),
    ],
)
def test_huge_sizes_are_one_line_and_leave_nothing(tmp_path, capsys, args, fragment):
    out = tmp_path / "run"
    code, err = _main_exit(["train", *TINY, "--steps", "2", *args, "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and fragment in err and "GiB" in err, err
    assert not out.exists()
    # nothing blocks the next run: a sane one starts in the same place
    code, err = _main_exit(["train", *TINY, "--steps", "2", "--out", str(out)], capsys)
    assert code == 0, err


def test_resume_is_checked_before_it_touches_the_run(tmp_path, capsys, monkeypatch):
    """The check reads the config it trains: a resumed run that does not fit (here: less free
    memory than before) is refused with the run directory untouched."""
    out = tmp_path / "run"
    assert _main_exit(["train", *TINY, "--steps", "2", "--out", str(out)], capsys)[0] == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1000)
    code, err = _main_exit(["train", "--resume", "--steps", "4", "--out", str(out)], capsys)
    assert code == 2 and "--batch-size 32 needs" in err and err.count("\n") == 1, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    cfg = resolve_config({"steps": 2, "batch_size": 64, "data": {"kind": "synthetic", "n": 3}})
    with pytest.raises(UsageError, match="needs at least"):
        check_sizes(cfg, torch.device("cpu"))
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    check_sizes(cfg, torch.device("cpu"))  # unknown free memory: nothing refused


def test_paper_defaults_fit_a_small_machine():
    """The papers' synthetic defaults (batch 6144 InfoNCE, 1000 AnInfoNCE) need well under the
    memory of a laptop: the check only refuses the absurd."""
    for loss in ("infonce", "aninfonce"):
        cfg = resolve_config({"data": {"kind": "synthetic"}, "loss": {"name": loss}})
        assert sum(memory.step_bytes(cfg).values()) < 4 * 2**30
