"""The in-loop scores of a run: :func:`score` (linear R^2, MCC, learned vs true lambdas)."""

from __future__ import annotations

from typing import Any

import numpy as np


def score(
    h: np.ndarray,
    z: np.ndarray,
    learned_lambdas: np.ndarray | None = None,
    true_lambdas: np.ndarray | None = None,
) -> dict[str, Any]:
    """The in-loop scores of encodings ``h`` against latents ``z`` with :mod:`ident3d.metrics`:
    linear R^2 (OLS fitted on the first half, scored on the second; mean and per latent), the
    Pearson MCC with its matching (``match[i]`` = encoder dim of latent ``i``) and, for
    AnInfoNCE on anisotropic data, the learned lambdas against the true Lambda."""
    from ident3d import metrics

    r2 = metrics.linear_r2(h, z)
    m = metrics.mcc(h, z)
    out: dict[str, Any] = {
        "r2": r2.mean,
        "r2_per_dim": r2.per_factor,
        "mcc": m.mean,
        "match": m.matching,
    }
    if learned_lambdas is not None:
        out["lambda"] = [float(v) for v in learned_lambdas]
        if true_lambdas is not None and len(true_lambdas) == len(learned_lambdas):
            lam = metrics.compare_lambdas(learned_lambdas, true_lambdas, m.matching)
            out["lambda_matched"] = lam.learned_matched
            out["lambda_rel_error"] = lam.mean_relative_error
            out["lambda_sorted_rel_error"] = lam.mean_sorted_relative_error
            out["lambda_rank_corr"] = lam.rank_correlation
    return out
