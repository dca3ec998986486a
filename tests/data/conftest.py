"""Fixtures shared by the ident3d.data tests: small stores (built once per test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_helpers import make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("data") / "images"
    images, raw = make_store(root)
    return root, images, raw


@pytest.fixture(scope="module")
def pairs_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("data") / "pairs"
    images, raw = make_store(root, n=17, kind="pairs", shard_size=4)
    return root, images, raw
