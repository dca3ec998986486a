"""Nonlinear identifiability, the Causal3DIdent protocol: :func:`kernel_r2` (RBF kernel ridge,
grid search by 3-fold cross-validation, as scikit-learn's ``GridSearchCV(KernelRidge)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from ident3d.errors import UsageError
from ident3d.metrics.common import ArrayLike, R2Result, _pair, r2_scores

#: The Causal3DIdent grid (scikit-learn's ``ParameterGrid`` order: alpha outer, gamma inner).
KERNEL_ALPHAS: tuple[float, ...] = (1.0, 0.1, 0.01, 0.001)
KERNEL_GAMMAS: tuple[float, ...] = tuple(float(g) for g in np.logspace(-2, 2, 4))
#: Samples the Causal3DIdent protocol fits kernel ridge on.
KERNEL_FIT_SAMPLES = 10_240
#: Kernel problems up to this many fit samples run on one CPU thread.
SMALL_KERNEL_PROBLEM = 2048


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
