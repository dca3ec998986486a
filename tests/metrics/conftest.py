"""Fixtures shared by the ident3d.metrics tests: one BLAS/OpenMP thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Small problems: one BLAS/OpenMP thread each for torch and scikit-learn. On a loaded
    machine two spinning OpenMP threads make these tiny solves 50x slower."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)
