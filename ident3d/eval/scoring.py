"""The evaluation itself: :func:`evaluate` scores encodings against factors with
:mod:`ident3d.metrics` into an :class:`EvalResult` (the report dict plus predictions), with the
factor blocks it scores (:func:`resolve_blocks`, :func:`default_blocks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ident3d import metrics
from ident3d.errors import DataError, UsageError
from ident3d.eval.report import REPORT_FORMAT


@dataclass
class EvalResult:
    """``report`` (the JSON-ready dict of ``report.json``) plus the arrays the figures need:
    ``predictions[kind]`` and ``targets[kind]`` of the scored samples (``kind`` in
    ``linear``, ``kernel``)."""

    report: dict[str, Any]
    predictions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    targets: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _clean(x: Any) -> Any:
    """JSON-ready: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def resolve_blocks(
    blocks: dict[str, Sequence[str | int]], names: Sequence[str]
) -> dict[str, list[int]]:
    """Factor groups -> column indices. Each entry is a factor name, a column index or a
    range ``a-b`` (inclusive), as :func:`ident3d.latents.parse_dims` reads them; an entry may
    also be a comma-separated string of those (``"0-2,hue_spot"``)."""
    from ident3d.latents import parse_dims

    out: dict[str, list[int]] = {}
    for block, cols in blocks.items():
        items = [c.strip() for c in cols.split(",")] if isinstance(cols, str) else list(cols)
        idx: list[int] = []
        for c in items:
            if isinstance(c, str) and c in names:
                idx.append(list(names).index(c))
                continue
            if isinstance(c, str) and not c:
                continue
            try:
                idx.extend(parse_dims(str(c), len(names)) or range(len(names)))
            except UsageError:
                raise UsageError(
                    f"block {block}: {c!r} is neither a factor name ({', '.join(names)}) "
                    f"nor a column index or range a-b below {len(names)}"
                ) from None
        if not idx:
            raise UsageError(f"block {block} lists no factors")
        out[block] = list(dict.fromkeys(idx))
    return out


def default_blocks(
    names: Sequence[str], spec: dict[str, Any] | None, true_lambdas: Sequence[float] | None
) -> dict[str, list[int]]:
    """Factor groups worth a block score for a synthetic run: content (factors the conditional
    leaves unchanged) vs style (the ones it changes) when ``dims`` is a strict subset, and
    groups of equal true Lambda (e.g. the bimodal setting's two halves)."""
    blocks: dict[str, list[int]] = {}
    d = len(names)
    if spec and spec.get("dims") is not None:
        style = sorted({int(i) for i in spec["dims"]})
        content = [i for i in range(d) if i not in style]
        if content and style:
            blocks["content"] = content
            blocks["style"] = style
    if true_lambdas is not None and spec is not None:
        dims = spec.get("dims")
        active = list(range(d)) if dims is None else [int(i) for i in dims]
        if len(active) == len(true_lambdas):
            groups: dict[float, list[int]] = {}
            for i, lam in zip(active, true_lambdas, strict=True):
                groups.setdefault(round(float(lam), 9), []).append(i)
            if 1 < len(groups) <= 4 and all(len(g) > 1 for g in groups.values()):
                for lam, idx in sorted(groups.items(), reverse=True):
                    blocks[f"Lambda={lam:g}"] = idx
    return blocks


def evaluate(
    h: np.ndarray | torch.Tensor,
    z: np.ndarray | torch.Tensor,
    names: Sequence[str] | None = None,
    *,
    fit_fraction: float = 0.5,
    kernel: bool = True,
    kernel_fit: int | None = None,
    kernel_score: int | None = None,
    device: str | torch.device | None = None,
    learned_lambdas: np.ndarray | None = None,
    true_lambdas: np.ndarray | Sequence[float] | None = None,
    lambda_dims: Sequence[int] | None = None,
    blocks: dict[str, list[int]] | None = None,
) -> EvalResult:
    """Every metric of :mod:`ident3d.metrics` on encodings ``h`` and factors ``z``.

    - linear R^2: OLS fitted on the first ``fit_fraction`` of the samples, scored on the rest;
    - kernel R^2 (unless ``kernel=False``): fitted on the first ``kernel_fit`` samples
      (default ``min(10240, N // 2)``: the protocol's 10,240 when there are enough), scored on
      the next ``kernel_score`` (default all the rest);
    - Pearson and Spearman MCC on all samples, with their matchings;
    - block R^2 (linear; kernel too when computed) for ``blocks`` (name -> factor columns);
    - learned lambdas (one per encoding dim) against ``true_lambdas`` (for the factors
      ``lambda_dims``, default all), matched through the Pearson MCC matching.
    """
    ht = metrics.as_float64(h, "encodings h")
    zt = metrics.as_float64(z, "factors z")
    if ht.shape[0] != zt.shape[0]:
        raise DataError(
            f"encodings and factors have different sample counts ({ht.shape[0]} vs {zt.shape[0]})."
        )
    n, d_z = zt.shape
    names = list(names) if names is not None else [f"z{i}" for i in range(d_z)]
    if len(names) != d_z:
        raise UsageError(f"{len(names)} factor names for {d_z} factors.")
    timing: dict[str, float] = {}

    t0 = time.perf_counter()
    lin = metrics.linear_r2(ht, zt, fit_fraction=fit_fraction, return_predictions=True)
    timing["linear_s"] = time.perf_counter() - t0

    ker = None
    kernel_protocol: dict[str, Any] = {"skipped": "disabled (--no-kernel)"}
    if kernel:
        fit = min(metrics.KERNEL_FIT_SAMPLES, n // 2) if kernel_fit is None else int(kernel_fit)
        if kernel_fit is None and fit < 6:
            raise UsageError(
                f"too few samples for kernel ridge: {n} (need at least 12; or use --no-kernel)."
            )
        if kernel_fit is not None and fit > n - 2:
            raise UsageError(
                f"too few samples for the kernel split: --kernel-fit {fit} of {n} samples "
                "leaves fewer than 2 to score."
            )
        dev = torch.device(device) if device is not None else None
        t0 = time.perf_counter()
        ker = metrics.kernel_r2(
            ht.to(dev) if dev is not None else ht,
            zt.to(dev) if dev is not None else zt,
            n_fit=fit,
            n_score=kernel_score,
            device=dev,
            return_predictions=True,
        )
        timing["kernel_s"] = time.perf_counter() - t0
        kernel_protocol = {
            "method": "RBF kernel ridge, per factor 3-fold grid search (KFold, no shuffle), "
            "refit on the fit samples",
            "standardised": "encodings and each factor, with the fit samples' mean and std",
            "alphas": list(metrics.KERNEL_ALPHAS),
            "gammas": list(metrics.KERNEL_GAMMAS),
            "n_fit": ker.n_fit,
            "n_score": ker.n_score,
            "protocol_n_fit": metrics.KERNEL_FIT_SAMPLES,
            "reduced": ker.n_fit < metrics.KERNEL_FIT_SAMPLES,
            "device": str(ht.device if dev is None else dev),
        }

    t0 = time.perf_counter()
    pear = metrics.mcc(ht, zt, "pearson")
    spear = metrics.mcc(ht, zt, "spearman")
    timing["mcc_s"] = time.perf_counter() - t0

    per_factor = []
    for i, name in enumerate(names):
        row: dict[str, Any] = {
            "index": i,
            "name": name,
            "linear_r2": lin.per_factor[i],
            "kernel_r2": ker.per_factor[i] if ker else None,
            "mcc_pearson": pear.per_factor[i],
            "mcc_spearman": spear.per_factor[i],
            "matched_dim_pearson": pear.matching[i],
            "matched_dim_spearman": spear.matching[i],
            "sign_pearson": pear.signs[i],
        }
        if ker:
            row["kernel_alpha"] = ker.params["alpha"][i]
            row["kernel_gamma"] = ker.params["gamma"][i]
        per_factor.append(row)

    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "linear_r2": lin.mean,
        "kernel_r2": ker.mean if ker else None,
        "mcc_pearson": pear.mean,
        "mcc_spearman": spear.mean,
        "n_samples": int(n),
        "encoding_dim": int(ht.shape[1]),
        "factor_dim": int(d_z),
        "per_factor": per_factor,
        "protocol": {
            "linear": {
                "method": "ordinary least squares with intercept, encodings -> each factor",
                "in_sample": False,
                "fit_fraction": fit_fraction,
                "n_fit": lin.n_fit,
                "n_score": lin.n_score,
                "split": "first n_fit samples fit, the rest score",
            },
            "kernel": kernel_protocol,
            "mcc": {
                "method": "mean |correlation| after Hungarian matching (all samples)",
                "n": int(n),
            },
        },
        "mcc_matching": {"pearson": pear.matching, "spearman": spear.matching},
        "timing": timing,
    }

    if blocks:
        # per-factor regressions are independent: a block's linear score is the mean of its
        # factors' scores (computed again by block_r2 for the record), its kernel score too
        bl = metrics.block_r2(ht, zt, blocks, "linear", fit_fraction=fit_fraction).blocks
        if ker:
            for name, cols in blocks.items():
                bl[name]["kernel_r2"] = float(np.mean([ker.per_factor[c] for c in cols]))
        report["blocks"] = bl

    if learned_lambdas is not None:
        lam_report: dict[str, Any] = {"learned": [float(v) for v in np.ravel(learned_lambdas)]}
        if true_lambdas is not None:
            dims = list(range(d_z)) if lambda_dims is None else [int(i) for i in lambda_dims]
            true = np.asarray(true_lambdas, dtype=np.float64).ravel()
            if len(dims) != len(true):
                raise DataError(f"{len(true)} true Lambda values for {len(dims)} factors.")
            match = [pear.matching[i] for i in dims]
            if all(m >= 0 for m in match):
                cmp_ = metrics.compare_lambdas(learned_lambdas, true, match)
                lam_report.update(cmp_.to_dict())
                lam_report["factors"] = [names[i] for i in dims]
                lam_report["matched_by"] = "Pearson MCC matching"
        report["lambda"] = lam_report

    result = EvalResult(report=_clean(report))
    result.predictions["linear"] = lin.predictions
    result.targets["linear"] = lin.targets
    if ker:
        result.predictions["kernel"] = ker.predictions
        result.targets["kernel"] = ker.targets
    return result
