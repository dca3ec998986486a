"""Helpers shared by the ident3d.eval tests: tiny runs, an original-layout folder, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _train(cfg_user: dict, out: Path) -> Path:
    from ident3d.train import resolve_config, train

    train(resolve_config(cfg_user), out, progress=False)
    return out


def _main(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``ident3d.cli.main`` (the real entry point, with its exit-2 handling)."""
    from ident3d.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def _arrays(n: int = 600, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, size=(n, 4))
    h = np.tanh(z[:, [2, 0, 1, 3]] * 1.5) + 0.02 * rng.normal(size=(n, 4))
    h[:, 3] = rng.normal(size=n)  # factor 3 is lost
    return h, z
