"""Discrete factors: :func:`logistic_accuracy`, the held-out accuracy of multinomial logistic
regression from the encodings to each discrete factor (the Causal3DIdent and Multimodal3DIdent
protocol for the object class), and its :class:`AccuracyResult`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ident3d.errors import DataError, UsageError
from ident3d.metrics.common import ArrayLike, _device, as_float64, split_sizes


@dataclass
class AccuracyResult:
    """Held-out classification accuracy per discrete factor.

    ``per_factor[i]`` is the fraction of scored samples whose label logistic regression
    predicts exactly; ``chance[i]`` the accuracy of always predicting the most frequent label
    of the fit samples (what an encoding that carries nothing about the factor reaches), and
    ``n_classes[i]`` the number of distinct labels among all samples (``1 / n_classes`` is the
    chance level of balanced classes). ``mean`` averages ``per_factor``. ``predictions`` and
    ``targets`` (the scored samples' labels) are filled only when asked for and are not part
    of ``to_dict()``.
    """

    mean: float
    per_factor: list[float]
    chance: list[float]
    n_classes: list[int]
    protocol: str
    n_fit: int
    n_score: int
    params: dict[str, Any] = field(default_factory=dict)
    predictions: np.ndarray | None = field(default=None, repr=False)
    targets: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("predictions")
        d.pop("targets")
        return d


def _as_labels(y: ArrayLike) -> np.ndarray:
    """Integer labels ``(N, k)`` from a 1-D or 2-D array of integers (or integral floats)."""
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"labels must be a non-empty 1-D or 2-D array, got shape {arr.shape}.")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
            raise DataError(f"labels must be integers, got dtype {arr.dtype}.")
        if not np.array_equal(arr, np.round(arr)):
            raise DataError("labels must be integers (class indices), got fractional values.")
    return arr.astype(np.int64)


def _fit_logistic(
    x: torch.Tensor, y: torch.Tensor, k: int, c: float, max_iter: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Weights ``(d, m)`` and intercepts ``(m,)`` minimising scikit-learn's objective
    ``C * sum_i loss_i + 0.5 ||W||^2`` (intercept unpenalised), divided by ``C n`` for scale:
    the softmax cross-entropy over ``m = k`` classes, or for ``k = 2`` the binary logistic loss
    with one weight vector (as ``LogisticRegression`` does). The loss and its analytic gradient
    are computed in float64 torch (on ``x``'s device) and minimised by scipy's L-BFGS-B, the
    solver behind scikit-learn's ``lbfgs`` (``torch.optim`` is not used: its first step imports
    ``torch._dynamo``, seconds of start-up); returns the iterations used."""
    from scipy.optimize import minimize

    n, d = x.shape
    m = 1 if k == 2 else k
    xb = torch.cat([x, torch.ones((n, 1), dtype=x.dtype, device=x.device)], 1)
    target = y.to(x.dtype)[:, None] if m == 1 else torch.nn.functional.one_hot(y, k).to(x.dtype)
    reg = 1.0 / (c * n)

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = torch.as_tensor(theta, dtype=x.dtype, device=x.device).view(d + 1, m)
        z = xb @ w
        if m == 1:
            loss = (torch.nn.functional.softplus(z) - target * z).mean()
            resid = torch.sigmoid(z) - target
        else:
            loss = (torch.logsumexp(z, 1) - (target * z).sum(1)).mean()
            resid = torch.softmax(z, 1) - target
        grad = xb.T @ resid / n
        loss = loss + 0.5 * reg * (w[:d] * w[:d]).sum()
        grad[:d] += reg * w[:d]
        return float(loss), grad.reshape(-1).cpu().numpy().astype(np.float64)

    res = minimize(
        fun,
        np.zeros((d + 1) * m),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15, "maxcor": 20},
    )
    w = torch.as_tensor(res.x, dtype=x.dtype, device=x.device).view(d + 1, m)
    return w[:d], w[d], int(res.nit)


def logistic_accuracy(
    h: ArrayLike,
    labels: ArrayLike,
    fit_fraction: float = 0.5,
    c: float = 1.0,
    max_iter: int = 1000,
    tol: float = 1e-8,
    device: str | torch.device | None = None,
    return_predictions: bool = False,
) -> AccuracyResult:
    """Held-out accuracy of multinomial logistic regression from ``h`` to each label column.

    The first ``floor(N * fit_fraction)`` samples fit and the rest score, as the Causal3DIdent
    harness (``disentanglement_utils.linear_disentanglement(mode="accuracy")``) does with
    scikit-learn's ``LogisticRegression()``: L2 penalty with ``C = c`` (default 1.0),
    unpenalised intercept, softmax over the classes (binary logistic for two classes), fitted on
    the raw encodings. Here it is solved with scipy's L-BFGS-B (scikit-learn's ``lbfgs``) on a
    float64 torch loss and gradient, to a projected gradient of ``tol`` and at most
    ``max_iter`` iterations (scikit-learn stops after 100 by default; the optimum is the
    same where it converges). ``labels`` are integer class indices, ``(N,)`` or ``(N, k)`` for ``k``
    discrete factors; a label seen only among the scored samples can never be predicted (it
    counts as an error), and a factor with one label in the fit samples predicts it always.
    """
    ht = as_float64(h, "encodings h", device)
    y = _as_labels(labels)
    n = ht.shape[0]
    if y.shape[0] != n:
        raise DataError(f"encodings and labels have different sample counts ({n} vs {len(y)}).")
    if not c > 0:
        raise UsageError(f"the inverse regularisation strength c must be positive, got {c}.")
    n_fit, n_score = split_sizes(n, fit_fraction)
    dev = _device(device) if device is not None else ht.device
    x_fit, x_score = ht[:n_fit], ht[n_fit:]
    per_factor: list[float] = []
    chance: list[float] = []
    n_classes: list[int] = []
    iters: list[int] = []
    preds = np.empty((n_score, y.shape[1]), np.int64)
    for j in range(y.shape[1]):
        col = y[:, j]
        n_classes.append(len(np.unique(col)))
        fit_classes, fit_codes = np.unique(col[:n_fit], return_inverse=True)
        counts = np.bincount(fit_codes, minlength=len(fit_classes))
        majority = fit_classes[int(np.argmax(counts))]
        chance.append(float(np.mean(col[n_fit:] == majority)))
        if len(fit_classes) == 1:
            pred = np.full(n_score, fit_classes[0], np.int64)
            iters.append(0)
        else:
            k = len(fit_classes)
            yt = torch.as_tensor(fit_codes, dtype=torch.int64, device=dev)
            w, b, it = _fit_logistic(x_fit, yt, k, float(c), int(max_iter), float(tol))
            iters.append(it)
            logits = x_score @ w + b
            code = (logits[:, 0] > 0).long() if k == 2 else logits.argmax(1)
            pred = fit_classes[code.cpu().numpy()]
        preds[:, j] = pred
        per_factor.append(float(np.mean(pred == col[n_fit:])))
    return AccuracyResult(
        mean=float(np.mean(per_factor)),
        per_factor=per_factor,
        chance=chance,
        n_classes=n_classes,
        protocol="logistic-regression-heldout",
        n_fit=n_fit,
        n_score=n_score,
        params={"c": float(c), "penalty": "l2", "fit_fraction": fit_fraction, "iterations": iters},
        predictions=preds if return_predictions else None,
        targets=y[n_fit:].copy() if return_predictions else None,
    )
