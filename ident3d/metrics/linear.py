"""Linear identifiability: :func:`linear_r2` (OLS with an intercept, fitted on the first part of
the samples and scored on the rest, or in sample).
"""

from __future__ import annotations

import torch

from ident3d.errors import UsageError
from ident3d.metrics.common import ArrayLike, R2Result, _ols_fit, _pair, r2_scores, split_sizes


def linear_r2(
    h: ArrayLike,
    z: ArrayLike,
    fit_fraction: float = 0.5,
    in_sample: bool = False,
    device: str | torch.device | None = None,
    return_predictions: bool = False,
) -> R2Result:
    """R^2 of ordinary least squares (with intercept) from encodings ``h`` to factors ``z``.

    By default the first ``floor(N * fit_fraction)`` samples fit and the rest score (the
    original protocol: half of 4096 encodings each). With ``in_sample=True`` all samples fit
    and score (labelled ``in_sample`` in the result). Matches scikit-learn's
    ``LinearRegression`` + ``r2_score`` per factor to round-off.
    """
    ht, zt = _pair(h, z, device)
    n = ht.shape[0]
    if in_sample:
        if n < 2:
            raise UsageError(f"too few samples for an in-sample fit: {n} (need at least 2).")
        fit = score = slice(0, n)
        n_fit = n_score = n
    else:
        n_fit, n_score = split_sizes(n, fit_fraction)
        fit, score = slice(0, n_fit), slice(n_fit, n)
    coef, intercept = _ols_fit(ht[fit], zt[fit])
    pred = ht[score] @ coef + intercept
    r2 = r2_scores(zt[score], pred).cpu().numpy()
    return R2Result(
        mean=float(r2.mean()),
        per_factor=[float(v) for v in r2],
        protocol="linear-ols-in-sample" if in_sample else "linear-ols-heldout",
        n_fit=n_fit,
        n_score=n_score,
        in_sample=in_sample,
        params={"fit_fraction": None if in_sample else fit_fraction},
        predictions=pred.cpu().numpy() if return_predictions else None,
        targets=zt[score].cpu().numpy() if return_predictions else None,
    )
