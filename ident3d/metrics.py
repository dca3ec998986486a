"""Identifiability scores: how well encodings ``h`` recover ground-truth factors ``z``.

Every function takes ``h`` (``(N, d_h)`` encodings) and ``z`` (``(N, d_z)`` factors) as numpy
arrays or torch tensors and computes in float64 with torch (on ``device`` when one is given,
the CPU otherwise). Results are small dataclasses with a ``to_dict()`` that is JSON-ready.

Protocols (section 3 of the reference facts):

- :func:`linear_r2`: ordinary least squares with an intercept from ``h`` to each factor, fitted
  on the first ``fit_fraction`` of the samples and scored (R^2, as scikit-learn's ``r2_score``)
  on the rest. ``in_sample=True`` fits and scores on all samples (the AnInfoNCE logs did that);
  the result says which.
- :func:`kernel_r2`: the Causal3DIdent protocol; see its docstring for where it differs from
  scikit-learn's ``GridSearchCV(KernelRidge(kernel="rbf"), cv=3)`` (nowhere that changes
  the numbers beyond round-off, by design).
- :func:`mcc`: mean absolute Pearson (or Spearman) correlation after Hungarian matching of
  factors to encoding dimensions.
- :func:`block_r2`: R^2 of predicting groups of factors (e.g. content vs style).
- :func:`compare_lambdas`: AnInfoNCE's learned lambda against the true Lambda.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

from ident3d.errors import DataError, UsageError

ArrayLike = np.ndarray | torch.Tensor

#: The Causal3DIdent grid (scikit-learn's ``ParameterGrid`` order: alpha outer, gamma inner).
KERNEL_ALPHAS: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
KERNEL_GAMMAS: tuple[float, ...] = tuple(float(g) for g in np.logspace(-2, 2, 4))
#: Samples the Causal3DIdent protocol fits kernel ridge on.
KERNEL_FIT_SAMPLES = 10_240


# --------------------------------------------------------------------------------------------
# helpers


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device("cpu") if device is None else torch.device(device)


def as_float64(x: ArrayLike, name: str, device: str | torch.device | None = None) -> torch.Tensor:
    """``x`` as a 2-D float64 tensor on ``device`` (a 1-D input becomes one column).

    Raises :class:`DataError` for anything that is not a finite numeric 1-D/2-D array.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach().to(device=_device(device), dtype=torch.float64)
    else:
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
            raise DataError(f"{name} must be numeric, got dtype {arr.dtype}.")
        t = torch.as_tensor(arr.astype(np.float64, copy=False), device=_device(device))
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise DataError(f"{name} must be a 1-D or 2-D array, got shape {tuple(t.shape)}.")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {tuple(t.shape)}).")
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{name} contains NaN or infinite values.")
    return t


def _pair(
    h: ArrayLike, z: ArrayLike, device: str | torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    ht = as_float64(h, "encodings h", device)
    zt = as_float64(z, "factors z", device)
    if ht.shape[0] != zt.shape[0]:
        raise DataError(
            f"encodings and factors have different sample counts ({ht.shape[0]} vs {zt.shape[0]})."
        )
    return ht, zt


def split_sizes(n: int, fit_fraction: float) -> tuple[int, int]:
    """Sizes ``(n_fit, n_score)`` of the first-part / held-out split of ``n`` samples."""
    if not 0.0 < fit_fraction < 1.0:
        raise UsageError(f"fit_fraction must lie strictly between 0 and 1, got {fit_fraction}.")
    n_fit = math.floor(n * fit_fraction)
    n_score = n - n_fit
    if n_fit < 2 or n_score < 2:
        raise UsageError(
            f"too few samples for the split: {n} samples with fit_fraction {fit_fraction} "
            f"give {n_fit} to fit and {n_score} to score (need at least 2 each)."
        )
    return n_fit, n_score


def r2_scores(y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Per-column coefficient of determination, exactly as scikit-learn's ``r2_score``.

    ``1 - SS_res / SS_tot`` per column; a constant column scores 1.0 if predicted exactly and
    0.0 otherwise (scikit-learn's ``force_finite``).
    """
    ss_res = ((y - pred) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    ok = ss_tot > 0
    r2 = torch.where(ok, 1.0 - ss_res / torch.where(ok, ss_tot, 1.0), 0.0)
    return torch.where(~ok & (ss_res == 0), 1.0, r2)


def _ols_fit(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-norm least squares with an intercept (scikit-learn's ``LinearRegression``).

    Centres both sides, drops numerically constant encoding columns, solves by SVD with the
    LAPACK ``gelsd`` cut-off (``eps * max(m, n)`` relative to the largest singular value).
    Returns ``(coef (d_h, d_z), intercept (d_z,))``.
    """
    x_mean = x.mean(0)
    y_mean = y.mean(0)
    xc = x - x_mean
    yc = y - y_mean
    # A constant column centres to round-off noise (~1e-17), which lstsq would happily fit.
    scale = x.abs().amax(0).clamp_min(1.0)
    const = xc.abs().amax(0) <= 1e-12 * scale
    xc = xc.masked_fill(const[None, :], 0.0)
    u, s, vh = torch.linalg.svd(xc, full_matrices=False)
    tol = (s.max() if s.numel() else torch.tensor(0.0)) * max(xc.shape) * torch.finfo(x.dtype).eps
    inv = torch.where(s > tol, 1.0 / torch.where(s > tol, s, 1.0), 0.0)
    coef = vh.T @ (inv[:, None] * (u.T @ yc))
    intercept = y_mean - x_mean @ coef
    return coef, intercept


# --------------------------------------------------------------------------------------------
# results


@dataclass
class R2Result:
    """Per-factor and mean R^2 of a regression from encodings to factors.

    ``protocol`` names how it was computed; ``in_sample`` is True only when the scores were
    computed on the samples the model was fitted on. ``params`` holds per-factor choices
    (kernel ridge: the selected alpha and gamma). ``predictions``/``targets`` (the scored
    samples, in the factors' own units) are filled only when asked for and are not part of
    ``to_dict()``.
    """

    mean: float
    per_factor: list[float]
    protocol: str
    n_fit: int
    n_score: int
    in_sample: bool
    params: dict[str, Any] = field(default_factory=dict)
    predictions: np.ndarray | None = field(default=None, repr=False)
    targets: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("predictions")
        d.pop("targets")
        return d


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


# --------------------------------------------------------------------------------------------
# linear R^2


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


# --------------------------------------------------------------------------------------------
# MCC


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


__all__ = [
    "KERNEL_ALPHAS",
    "KERNEL_FIT_SAMPLES",
    "KERNEL_GAMMAS",
    "MCCResult",
    "R2Result",
    "as_float64",
    "correlation_matrix",
    "linear_r2",
    "mcc",
    "r2_scores",
    "split_sizes",
]
