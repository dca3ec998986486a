"""Fixtures shared by the ident3d.eval tests: one thread, a tiny synthetic run and an image run
(each trained once per test module).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from eval_helpers import _train


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny problems: one torch thread (two spinning OpenMP threads on a loaded 2-core machine
    make them far slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> Path:
    """A tiny AnInfoNCE run on a 3-D synthetic process (checkpoints at steps 10, 20)."""
    torch.set_num_threads(1)
    return _train(
        {
            "data": {
                "kind": "synthetic",
                "n": 3,
                "lambdas": "linspace",
                "space": "extended_sphere",
                "cond_draws": 200,
            },
            "loss": {"name": "aninfonce"},
            "model": {"kind": "mlp", "hidden": [16, 16]},
            "steps": 20,
            "batch_size": 64,
            "loop": {"checkpoint_every": 10, "eval_every": 0, "threads": 1, "num_workers": 0},
        },
        tmp_path_factory.mktemp("runs") / "an3",
    )
