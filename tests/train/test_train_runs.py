"""Tests of ident3d.train.runs: loading runs and checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from ident3d.errors import UsageError
from ident3d.train import load_run, resolve_config, train


def test_load_run_rejects_foreign_files(tmp_path):
    with pytest.raises(UsageError):
        load_run(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"format": "ident3d-run/1"}))
    bogus = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(UsageError):
        load_run(bogus)
    out = tmp_path / "run"
    train(resolve_config({"steps": 2, "batch_size": 8, "data": {"kind": "synthetic", "n": 2},
                          "model": {"hidden": [8]}, "loop": {"eval_every": 0, "threads": 1}}),
          out, progress=False)  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    cfg["model"]["hidden"] = [9]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="does not match"):
        load_run(out)
