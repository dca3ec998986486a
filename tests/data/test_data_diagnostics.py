"""Tests of ident3d.data.diagnostics (and ident3d info --knn-diagnostics)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ident3d import data as D


def test_simulation_reproduces_original_gap() -> None:
    # Facts section 2: 250k uniform points in 10-D, sigma 0.1 -> retrieved ~0.81 vs sampled
    # ~0.30, ~40% second-neighbour fallbacks.
    s = D.simulate_knn(n_stored=250_000, dim=10, n_pairs=1500, sigma=0.1, seed=0)
    assert 0.28 < s["sampled_distance_mean"] < 0.32
    assert 0.76 < s["retrieved_distance_mean"] < 0.86
    assert 0.33 < s["second_neighbour_fraction"] < 0.47


def test_knn_diagnostics(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = store
    out = D.knn_diagnostics(root, sigma=0.1, n_pairs=50)
    assert out["pairs"] == 23 and out["stored"] == 23 and out["layout"] == "store"
    assert out["retrieved_distance_mean"] > out["sampled_distance_mean"]
    json.dumps(out)  # JSON-ready


def test_cli_info_knn_diagnostics(
    store: tuple[Path, np.ndarray, np.ndarray],
    pairs_store: tuple[Path, np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ident3d.cli import main

    root, _, _ = store
    with pytest.raises(SystemExit) as exc:
        main(["info", str(root), "--knn-diagnostics", "--knn-sigma", "0.2"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "kNN pairs" in out and "sigma 0.2" in out and "second neighbour" in out
    proot, _, _ = pairs_store
    with pytest.raises(SystemExit) as exc:
        main(["info", str(proot), "--knn-diagnostics"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "PairDataset" in err[0]
