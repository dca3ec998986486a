"""Helpers shared by the ident3d.latents tests (sample sizes, KS check, seeded generators)."""

from __future__ import annotations

import numpy as np
from scipy import stats

N = 40_000


ALPHA = 1e-3  # KS p-value threshold; seeds are fixed, so this is deterministic


def ks_ok(x: np.ndarray, cdf) -> bool:
    return stats.kstest(x, cdf).pvalue > ALPHA


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
