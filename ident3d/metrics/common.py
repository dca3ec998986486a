"""What every score shares: float64 tensors from numpy or torch inputs, fit/score splits,
R^2 of predictions, least squares, and the R^2 result (:class:`R2Result`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ident3d.errors import DataError, UsageError

ArrayLike = np.ndarray | torch.Tensor


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
    tol = s.max() * max(xc.shape) * torch.finfo(x.dtype).eps
    inv = torch.where(s > tol, 1.0 / torch.where(s > tol, s, 1.0), 0.0)
    coef = vh.T @ (inv[:, None] * (u.T @ yc))
    intercept = y_mean - x_mean @ coef
    return coef, intercept


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
