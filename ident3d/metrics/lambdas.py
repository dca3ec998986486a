"""AnInfoNCE's learned lambdas against the true Lambda: :func:`compare_lambdas`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ident3d.errors import DataError
from ident3d.metrics.common import ArrayLike, as_float64


@dataclass
class LambdaResult:
    """AnInfoNCE's learned per-dimension precisions against the true Lambda.

    ``learned_matched[i]`` is the learned lambda of the encoding dimension matched to factor
    ``i`` (by ``matching``, e.g. from :func:`mcc`); ``relative_error`` is
    ``|learned_matched - true| / true``. The ``sorted_*`` fields compare both sorted (how the
    papers report it; with as many encoding dimensions as factors this does not depend on the
    matching). ``rank_correlation`` is the Spearman correlation of matched learned against
    true (1.0 when the order is recovered; None when either side is constant).
    """

    true: list[float]
    learned: list[float]
    matching: list[int]
    learned_matched: list[float]
    relative_error: list[float]
    mean_relative_error: float
    max_relative_error: float
    sorted_true: list[float]
    sorted_learned: list[float]
    sorted_relative_error: list[float]
    mean_sorted_relative_error: float
    rank_correlation: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_lambdas(
    learned: ArrayLike, true: ArrayLike, matching: Sequence[int] | None = None
) -> LambdaResult:
    """Compare learned lambdas (one per encoding dimension) with the true Lambda (one per
    factor), through ``matching[i]`` = encoding dimension of factor ``i`` (identity when
    ``None``; unmatched ``-1`` entries are not allowed here)."""
    lam = as_float64(learned, "learned lambdas").reshape(-1).cpu().numpy()
    tru = as_float64(true, "true Lambda").reshape(-1).cpu().numpy()
    if np.any(tru <= 0):
        raise DataError("the true Lambda must be positive.")
    if matching is None:
        if lam.size != tru.size:
            raise DataError(f"{lam.size} learned lambdas for {tru.size} factors: give a matching.")
        matching = list(range(tru.size))
    match = [int(m) for m in matching]
    if len(match) != tru.size or any(not 0 <= m < lam.size for m in match):
        raise DataError(
            f"the matching must give one encoding dimension in 0..{lam.size - 1} per factor."
        )
    matched = lam[match]
    rel = np.abs(matched - tru) / tru
    s_true, s_lam = np.sort(tru), np.sort(matched)
    s_rel = np.abs(s_lam - s_true) / s_true
    if np.ptp(tru) > 0 and np.ptp(matched) > 0:
        rho: float | None = float(spearmanr(matched, tru)[0])
    else:
        rho = None
    return LambdaResult(
        true=tru.tolist(),
        learned=lam.tolist(),
        matching=match,
        learned_matched=matched.tolist(),
        relative_error=rel.tolist(),
        mean_relative_error=float(rel.mean()),
        max_relative_error=float(rel.max()),
        sorted_true=s_true.tolist(),
        sorted_learned=s_lam.tolist(),
        sorted_relative_error=s_rel.tolist(),
        mean_sorted_relative_error=float(s_rel.mean()),
        rank_correlation=rho,
    )
