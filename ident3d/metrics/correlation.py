"""The mean correlation coefficient: :func:`mcc` (Pearson or Spearman, Hungarian matching of
factors to encoding dimensions) and its :class:`MCCResult`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from ident3d.errors import UsageError
from ident3d.metrics.common import ArrayLike, _pair


@dataclass
class MCCResult:
    """Mean absolute correlation after Hungarian matching.

    ``matching[i]`` is the encoding dimension matched to factor ``i`` (``-1`` when there are
    fewer encoding dimensions than factors and ``i`` was left unmatched); ``per_factor[i]`` its
    absolute correlation (NaN when unmatched); ``signs[i]`` the sign of that correlation.
    ``mean`` averages the matched pairs. ``correlation`` is the full ``(d_z, d_h)`` matrix of
    signed correlations (in ``to_dict()`` as nested lists).
    """

    mean: float
    per_factor: list[float]
    matching: list[int]
    signs: list[int]
    method: str
    n: int
    correlation: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_factor"] = [None if math.isnan(v) else v for v in self.per_factor]
        d["correlation"] = self.correlation.tolist()
        return d


def correlation_matrix(
    h: ArrayLike,
    z: ArrayLike,
    method: str = "pearson",
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Signed correlations ``(d_z, d_h)`` between every factor and every encoding dimension.

    ``method="spearman"`` correlates average ranks (ties share their mean rank, as
    ``scipy.stats.spearmanr``). A constant column correlates 0 with everything (scipy returns
    NaN there).
    """
    if method not in ("pearson", "spearman"):
        raise UsageError(f"unknown correlation method {method!r} (use 'pearson' or 'spearman').")
    ht, zt = _pair(h, z, device)
    if method == "spearman":
        ht = torch.as_tensor(rankdata(ht.cpu().numpy(), axis=0), device=ht.device)
        zt = torch.as_tensor(rankdata(zt.cpu().numpy(), axis=0), device=zt.device)

    def _standardise(x: torch.Tensor) -> torch.Tensor:
        xc = x - x.mean(0)
        norm = torch.linalg.vector_norm(xc, dim=0)
        scale = x.abs().amax(0).clamp_min(1e-300) * math.sqrt(x.shape[0])
        const = norm <= 1e-12 * scale
        return torch.where(const[None, :], 0.0, xc / torch.where(const, 1.0, norm)[None, :])

    c = _standardise(zt).T @ _standardise(ht)
    return c.clamp(-1.0, 1.0)


def mcc(
    h: ArrayLike,
    z: ArrayLike,
    method: str = "pearson",
    device: str | torch.device | None = None,
) -> MCCResult:
    """Mean absolute correlation coefficient after Hungarian matching (scipy).

    Each factor is matched to a distinct encoding dimension so that the summed absolute
    correlation is maximal (``scipy.optimize.linear_sum_assignment``); the score is the mean
    absolute correlation over matched pairs.
    """
    c = correlation_matrix(h, z, method, device).cpu().numpy()
    a = np.abs(c)
    rows, cols = linear_sum_assignment(a, maximize=True)
    d_z = c.shape[0]
    matching = [-1] * d_z
    per_factor = [math.nan] * d_z
    signs = [0] * d_z
    for r, col in zip(rows, cols, strict=True):
        matching[int(r)] = int(col)
        per_factor[int(r)] = float(a[r, col])
        signs[int(r)] = 1 if c[r, col] >= 0 else -1
    return MCCResult(
        mean=float(a[rows, cols].mean()),
        per_factor=per_factor,
        matching=matching,
        signs=signs,
        method=method,
        n=len(h),
        correlation=c,
    )
