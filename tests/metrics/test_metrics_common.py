"""Tests of ident3d.metrics.common: the scores on CUDA match the CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from metrics_helpers import _structured

from ident3d.metrics import (
    kernel_r2,
    linear_r2,
    mcc,
)


@pytest.mark.gpu
def test_metrics_on_cuda_match_cpu():
    h, z = _structured("warp", n=500, d=3, seed=2)
    hc, zc = torch.from_numpy(h).cuda(), torch.from_numpy(z).cuda()
    np.testing.assert_allclose(
        kernel_r2(hc, zc, n_fit=350, device="cuda").per_factor,
        kernel_r2(h, z, n_fit=350).per_factor,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        linear_r2(hc, zc, device="cuda").per_factor, linear_r2(h, z).per_factor, atol=1e-9
    )
    assert mcc(hc, zc, device="cuda").matching == mcc(h, z).matching
