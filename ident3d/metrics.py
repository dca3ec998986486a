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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata, spearmanr

from ident3d.errors import DataError, UsageError

ArrayLike = np.ndarray | torch.Tensor

#: The Causal3DIdent grid (scikit-learn's ``ParameterGrid`` order: alpha outer, gamma inner).
KERNEL_ALPHAS: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
KERNEL_GAMMAS: tuple[float, ...] = tuple(float(g) for g in np.logspace(-2, 2, 4))
#: Samples the Causal3DIdent protocol fits kernel ridge on.
KERNEL_FIT_SAMPLES = 10_240
#: Kernel problems up to this many fit samples run on one CPU thread.
SMALL_KERNEL_PROBLEM = 2048


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
    tol = s.max() * max(xc.shape) * torch.finfo(x.dtype).eps
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


# --------------------------------------------------------------------------------------------
# kernel ridge R^2 (Causal3DIdent protocol)


def kfold_slices(n: int, folds: int) -> list[tuple[int, int]]:
    """Held-out ``(start, stop)`` of each fold, exactly as ``sklearn.model_selection.KFold``
    without shuffling: contiguous blocks, the first ``n % folds`` one sample larger."""
    sizes = [n // folds + (1 if k < n % folds else 0) for k in range(folds)]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [(int(bounds[k]), int(bounds[k + 1])) for k in range(folds)]


def _standardise_like(fit: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardise with the fit part's mean and (population) std, as ``StandardScaler``;
    zero-variance columns keep scale 1."""
    mean = fit.mean(0)
    std = fit.std(0, correction=0)
    std = torch.where(std < 10 * torch.finfo(fit.dtype).eps * mean.abs().clamp_min(1.0), 1.0, std)
    return [(x - mean) / std for x in (fit, *others)]


def _rbf(x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """``exp(-gamma * ||x_i - y_j||^2)``, squared distances as scikit-learn computes them
    (``|x|^2 + |y|^2 - 2 x.y``, clipped at 0, an exact 0 diagonal when ``x is y``)."""
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    if x is y:
        d.fill_diagonal_(0.0)
    return torch.exp(d.clamp_min_(0.0).mul_(-gamma))


def _ridge_solve(k: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """Dual coefficients ``(K + alpha I)^-1 y`` for all columns of ``y`` at once.

    Cholesky; if round-off keeps ``K + alpha I`` from being positive definite, LU and then
    least squares (scikit-learn falls back the same way). ``alpha`` is added to ``k``'s
    diagonal in place and removed again afterwards (no copy of the matrix).
    """
    diag = k.diagonal()
    diag.add_(alpha)
    try:
        chol, info = torch.linalg.cholesky_ex(k)
        if int(info) == 0:
            return torch.cholesky_solve(y, chol)
        del chol
        try:
            return torch.linalg.solve(k, y)
        except RuntimeError:  # exactly singular
            return torch.linalg.lstsq(k.cpu(), y.cpu(), driver="gelsd").solution.to(y.device)
    finally:
        diag.sub_(alpha)


def _predict_chunks(
    x_new: torch.Tensor, x_fit: torch.Tensor, coef: torch.Tensor, gamma: float, chunk: int = 4096
) -> torch.Tensor:
    return torch.cat(
        [_rbf(x_new[i : i + chunk], x_fit, gamma) @ coef for i in range(0, x_new.shape[0], chunk)]
    )


@contextmanager
def _threads_for(n: int, device: torch.device) -> Iterator[None]:
    """One CPU thread for small kernel problems: they gain nothing from two, and two spinning
    OpenMP threads on a loaded machine made them ~50x slower here."""
    before = torch.get_num_threads()
    small = device.type == "cpu" and n <= SMALL_KERNEL_PROBLEM
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def kernel_r2(
    h: ArrayLike,
    z: ArrayLike,
    n_fit: int = KERNEL_FIT_SAMPLES,
    n_score: int | None = None,
    alphas: tuple[float, ...] = KERNEL_ALPHAS,
    gammas: tuple[float, ...] = KERNEL_GAMMAS,
    folds: int = 3,
    device: str | torch.device | None = None,
    return_predictions: bool = False,
) -> R2Result:
    """Nonlinear R^2 by RBF kernel ridge regression, the Causal3DIdent protocol.

    The first ``n_fit`` samples (10,240 by default) fit; the next ``n_score`` (all remaining by
    default) score. Encodings and each factor are standardised with the fit part's mean and
    std. Per factor, a ``folds``-fold grid search over ``alphas`` x ``gammas`` (mean held-out
    R^2 over folds) selects (alpha, gamma), the model is refitted on all ``n_fit`` samples and
    its R^2 on the scored samples is reported (in standardised units, which leaves R^2
    unchanged).

    This computes what ``GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": alphas, "gamma":
    gammas}, cv=3).fit(h_fit, z_fit[:, i])`` followed by ``r2_score`` computes, factor by factor,
    but organised so that nothing is computed twice:

    - per (gamma, fold) one training kernel and one held-out kernel, and per (gamma, fold,
      alpha) one Cholesky factorisation, solved for *all factors at once* (scikit-learn
      rebuilds kernels and refactorises for every factor: ``d_z`` times the work);
    - the refit factorises once per distinct selected (alpha, gamma), for all the factors that
      selected it;
    - float64 torch throughout (the GPU when ``device`` is one).

    Where it differs from scikit-learn: folds are KFold's contiguous blocks without shuffling
    (identical); ties in the mean CV score go to the first candidate in ``ParameterGrid``
    order, alpha outer and gamma inner (identical); scores differ only by floating-point
    round-off in the linear algebra (a different BLAS/LAPACK, Cholesky + triangular solves
    instead of ``scipy.linalg.solve(assume_a="pos")``), which can flip the choice between two
    candidates whose CV scores agree to round-off, with no visible change in the score.
    """
    ht, zt = _pair(h, z, device)
    n = ht.shape[0]
    if n_fit < 2 * folds or n - n_fit < 2:
        raise UsageError(
            f"too few samples for kernel ridge: {n} samples, {n_fit} to fit (at least "
            f"{2 * folds} for {folds}-fold CV) and at least 2 more to score."
        )
    stop = n if n_score is None else min(n, n_fit + n_score)
    if stop - n_fit < 2:
        raise UsageError(f"n_score must be at least 2, got {n_score}.")
    with _threads_for(n_fit, ht.device):
        return _kernel_r2(ht[:stop], zt[:stop], n_fit, alphas, gammas, folds, return_predictions)


def _kernel_r2(
    ht: torch.Tensor,
    zt: torch.Tensor,
    n_fit: int,
    alphas: tuple[float, ...],
    gammas: tuple[float, ...],
    folds: int,
    return_predictions: bool,
) -> R2Result:
    stop = ht.shape[0]
    x_fit, x_score = _standardise_like(ht[:n_fit], ht[n_fit:stop])
    y_fit, y_score = _standardise_like(zt[:n_fit], zt[n_fit:stop])
    d_z = y_fit.shape[1]

    # cv[gi, ai, fold, factor]: held-out R^2 of candidate (alpha, gamma) on that fold.
    cv = torch.empty(len(gammas), len(alphas), folds, d_z, dtype=torch.float64)
    for gi, gamma in enumerate(gammas):
        for f, (a, b) in enumerate(kfold_slices(n_fit, folds)):
            train = torch.cat([x_fit[:a], x_fit[b:]])
            y_train = torch.cat([y_fit[:a], y_fit[b:]])
            k_train = _rbf(train, train, gamma)
            k_held = _rbf(x_fit[a:b], train, gamma)
            for ai, alpha in enumerate(alphas):
                coef = _ridge_solve(k_train, y_train, alpha)
                cv[gi, ai, f] = r2_scores(y_fit[a:b], k_held @ coef).cpu()
            del k_train, k_held
    mean_cv = cv.mean(2)  # (gamma, alpha, factor)
    # ParameterGrid order: alpha outer, gamma inner; argmax returns the first maximum.
    grid = mean_cv.permute(1, 0, 2).reshape(len(alphas) * len(gammas), d_z)
    best = grid.argmax(0).tolist()
    best_alpha = [alphas[i // len(gammas)] for i in best]
    best_gamma = [gammas[i % len(gammas)] for i in best]

    pred = torch.empty_like(y_score)
    for gamma in sorted(set(best_gamma)):
        k_fit = _rbf(x_fit, x_fit, gamma)
        for alpha in sorted({a for a, g in zip(best_alpha, best_gamma, strict=True) if g == gamma}):
            cols = [i for i in range(d_z) if best_gamma[i] == gamma and best_alpha[i] == alpha]
            coef = _ridge_solve(k_fit, y_fit[:, cols], alpha)
            pred[:, cols] = _predict_chunks(x_score, x_fit, coef, gamma)
        del k_fit
    r2 = r2_scores(y_score, pred).cpu().numpy()
    z_std = zt[:n_fit].std(0, correction=0)
    z_mean = zt[:n_fit].mean(0)
    return R2Result(
        mean=float(r2.mean()),
        per_factor=[float(v) for v in r2],
        protocol="kernel-ridge-rbf-gridsearch",
        n_fit=n_fit,
        n_score=stop - n_fit,
        in_sample=False,
        params={
            "alpha": best_alpha,
            "gamma": best_gamma,
            "alphas": list(alphas),
            "gammas": list(gammas),
            "folds": folds,
            "cv_mean_r2": grid.T.tolist(),
        },
        predictions=(pred * torch.where(z_std > 0, z_std, 1.0) + z_mean).cpu().numpy()
        if return_predictions
        else None,
        targets=zt[n_fit:stop].cpu().numpy() if return_predictions else None,
    )


# --------------------------------------------------------------------------------------------
# block identifiability and AnInfoNCE's lambdas


@dataclass
class BlockR2Result:
    """R^2 of predicting each named group of factors (mean over the group's factors)."""

    method: str
    blocks: dict[str, dict[str, Any]]
    encoding_dims: list[int] | None
    protocol: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def block_r2(
    h: ArrayLike,
    z: ArrayLike,
    blocks: Mapping[str, Sequence[int]],
    method: str = "linear",
    encoding_dims: Sequence[int] | None = None,
    **kwargs: Any,
) -> BlockR2Result:
    """Block identifiability: how well each group of factors is predicted from the encoding.

    ``blocks`` maps a name to factor columns (e.g. ``{"content": [0, 1, 2], "style": [3,
    4]}``). ``encoding_dims`` restricts the encoding to some of its dimensions (e.g. the content
    part of a representation, expected to predict content well and style badly). ``method`` is
    ``"linear"`` (:func:`linear_r2`) or ``"kernel"`` (:func:`kernel_r2`); ``kwargs`` go to it.
    A block's score is the mean R^2 of its factors (scikit-learn's ``uniform_average``).
    """
    if method not in ("linear", "kernel"):
        raise UsageError(f"unknown block method {method!r} (use 'linear' or 'kernel').")
    ht, zt = _pair(h, z, kwargs.get("device"))
    d_h, d_z = ht.shape[1], zt.shape[1]
    if not blocks:
        raise UsageError("no factor blocks given.")
    for name, cols in blocks.items():
        if not cols or any(not 0 <= int(c) < d_z for c in cols):
            raise UsageError(
                f"block {name!r} must list factor columns in 0..{d_z - 1}, got {cols}."
            )
    if encoding_dims is not None:
        if not encoding_dims or any(not 0 <= int(c) < d_h for c in encoding_dims):
            raise UsageError(f"encoding_dims must lie in 0..{d_h - 1}, got {list(encoding_dims)}.")
        ht = ht[:, [int(c) for c in encoding_dims]]
    used = sorted({int(c) for cols in blocks.values() for c in cols})
    fn = linear_r2 if method == "linear" else kernel_r2
    res = fn(ht, zt[:, used], **kwargs)
    per = dict(zip(used, res.per_factor, strict=True))
    out = {
        name: {
            "factors": [int(c) for c in cols],
            "r2": float(np.mean([per[int(c)] for c in cols])),
            "per_factor": [per[int(c)] for c in cols],
        }
        for name, cols in blocks.items()
    }
    return BlockR2Result(
        method=method,
        blocks=out,
        encoding_dims=None if encoding_dims is None else [int(c) for c in encoding_dims],
        protocol=res.protocol,
    )


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


__all__ = [
    "KERNEL_ALPHAS",
    "KERNEL_FIT_SAMPLES",
    "KERNEL_GAMMAS",
    "BlockR2Result",
    "LambdaResult",
    "MCCResult",
    "R2Result",
    "as_float64",
    "block_r2",
    "compare_lambdas",
    "correlation_matrix",
    "kernel_r2",
    "kfold_slices",
    "linear_r2",
    "mcc",
    "r2_scores",
    "split_sizes",
]
