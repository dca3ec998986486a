"""The evaluation itself: :func:`evaluate` scores encodings against factors with
:mod:`ident3d.metrics` into an :class:`EvalResult` (the report dict plus predictions), with the
factor blocks it scores (:func:`resolve_blocks`, :func:`default_blocks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
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
    factor_types: Sequence[str] | None = None,
    block_roles: dict[str, str] | None = None,
    labels: np.ndarray | None = None,
) -> EvalResult:
    """Every metric of :mod:`ident3d.metrics` on encodings ``h`` and factors ``z``.

    - linear R^2: OLS fitted on the first ``fit_fraction`` of the samples, scored on the rest;
    - kernel R^2 (unless ``kernel=False``): fitted on the first ``kernel_fit`` samples
      (default ``min(10240, N // 2)``: the protocol's 10,240 when there are enough), scored on
      the next ``kernel_score`` (default all the rest);
    - Pearson and Spearman MCC on all samples, with their matchings;
    - block R^2 (linear; kernel too when computed) for ``blocks`` (name -> factor columns);
    - learned lambdas (one per encoding dim) against ``true_lambdas`` (for the factors
      ``lambda_dims``, default all), matched through the Pearson MCC matching;
    - ``factor_types`` (per column ``continuous``, the default, or ``discrete``): discrete
      factors are scored by the held-out accuracy of multinomial logistic regression
      (:func:`ident3d.metrics.logistic_accuracy`, same split as the linear R^2) on ``labels``
      (class indices ``(N, k)`` of the ``k`` discrete columns; default: the rounded values),
      and left out of the R^2 and MCC scores, which cover the continuous ones;
    - ``block_roles`` (block name -> ``content`` | ``style`` | ``view``) labels blocks with
      their role and the theory's prediction for it.
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
    types = ["continuous"] * d_z if factor_types is None else [str(t) for t in factor_types]
    if len(types) != d_z or any(t not in ("continuous", "discrete") for t in types):
        raise UsageError(
            f"factor_types must give 'continuous' or 'discrete' for each of the {d_z} factors."
        )
    # A factor constant over the evaluated samples (3DIdentBox's fixed rot_gamma, or a
    # view-specific factor held at 0 in the view being encoded) carries no information: its
    # R^2 would be 0/0 and its accuracy trivially 1. It is reported, but not scored.
    zr = zt.cpu().numpy()
    constant = {int(i) for i in np.flatnonzero(np.ptp(zr, axis=0) == 0)} if n else set()
    disc_all = [i for i, t in enumerate(types) if t == "discrete"]
    cont = [i for i, t in enumerate(types) if t == "continuous" and i not in constant]
    disc = [i for i in disc_all if i not in constant]
    if labels is not None and disc != disc_all:
        keep = [k for k, i in enumerate(disc_all) if i not in constant]
        labels = np.asarray(labels).reshape(n, -1)[:, keep]
    if not cont:
        raise UsageError("no continuous factor to score: R^2 and MCC need at least one.")
    pos = {c: j for j, c in enumerate(cont)}  # factor column -> column of the continuous part
    zc = zt[:, cont] if len(cont) < d_z else zt
    timing: dict[str, float] = {}

    t0 = time.perf_counter()
    lin = metrics.linear_r2(ht, zc, fit_fraction=fit_fraction, return_predictions=True)
    timing["linear_s"] = time.perf_counter() - t0

    acc = None
    if disc:
        y = np.rint(zt[:, disc].cpu().numpy()).astype(np.int64) if labels is None else labels
        t0 = time.perf_counter()
        acc = metrics.logistic_accuracy(ht, y, fit_fraction=fit_fraction)
        timing["accuracy_s"] = time.perf_counter() - t0

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
            zc.to(dev) if dev is not None else zc,
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
    pear = metrics.mcc(ht, zc, "pearson")
    spear = metrics.mcc(ht, zc, "spearman")
    timing["mcc_s"] = time.perf_counter() - t0

    def _full(values: Sequence[Any], missing: Any) -> list[Any]:
        """Per continuous factor -> per factor column (``missing`` for discrete ones)."""
        return [values[pos[i]] if i in pos else missing for i in range(d_z)]

    match_p, match_s = _full(pear.matching, -1), _full(spear.matching, -1)
    per_factor = []
    for i, name in enumerate(names):
        row: dict[str, Any]
        if i in constant:
            row = {
                "index": i,
                "name": name,
                "type": types[i],
                "constant": True,
                "linear_r2": None,
                "kernel_r2": None,
                "mcc_pearson": None,
                "mcc_spearman": None,
                "matched_dim_pearson": None,
                "matched_dim_spearman": None,
                "sign_pearson": None,
                "note": "constant in the evaluated samples: not scored",
            }
        elif i in pos:
            j = pos[i]
            row = {
                "index": i,
                "name": name,
                "type": "continuous",
                "linear_r2": lin.per_factor[j],
                "kernel_r2": ker.per_factor[j] if ker else None,
                "mcc_pearson": pear.per_factor[j],
                "mcc_spearman": spear.per_factor[j],
                "matched_dim_pearson": pear.matching[j],
                "matched_dim_spearman": spear.matching[j],
                "sign_pearson": pear.signs[j],
            }
            if ker:
                row["kernel_alpha"] = ker.params["alpha"][j]
                row["kernel_gamma"] = ker.params["gamma"][j]
        else:
            assert acc is not None
            k = disc.index(i)
            row = {
                "index": i,
                "name": name,
                "type": "discrete",
                "linear_r2": None,
                "kernel_r2": None,
                "mcc_pearson": None,
                "mcc_spearman": None,
                "matched_dim_pearson": None,
                "matched_dim_spearman": None,
                "sign_pearson": None,
                "accuracy": acc.per_factor[k],
                "chance": acc.chance[k],
                "n_classes": acc.n_classes[k],
            }
        per_factor.append(row)

    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "linear_r2": lin.mean,
        "kernel_r2": ker.mean if ker else None,
        "mcc_pearson": pear.mean,
        "mcc_spearman": spear.mean,
        "accuracy": acc.mean if acc else None,
        "n_samples": int(n),
        "encoding_dim": int(ht.shape[1]),
        "factor_dim": int(d_z),
        "per_factor": per_factor,
        "constant_factors": [names[i] for i in sorted(constant)],
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
        "mcc_matching": {"pearson": match_p, "spearman": match_s},
        "timing": timing,
    }
    if acc is not None:
        report["protocol"]["accuracy"] = {
            "method": "multinomial logistic regression (L2, C = 1, intercept), encodings -> "
            "each discrete factor; held-out accuracy",
            "fit_fraction": fit_fraction,
            "n_fit": acc.n_fit,
            "n_score": acc.n_score,
            "chance": "accuracy of always predicting the fit samples' most frequent label",
            "factors": [names[i] for i in disc],
        }

    if blocks:
        report["blocks"] = _score_blocks(
            ht, zt, blocks, pos, disc, ker, acc, fit_fraction, block_roles or {}
        )

    if learned_lambdas is not None:
        lam_report: dict[str, Any] = {"learned": [float(v) for v in np.ravel(learned_lambdas)]}
        if true_lambdas is not None:
            dims = list(range(d_z)) if lambda_dims is None else [int(i) for i in lambda_dims]
            true = np.asarray(true_lambdas, dtype=np.float64).ravel()
            if len(dims) != len(true):
                raise DataError(f"{len(true)} true Lambda values for {len(dims)} factors.")
            match = [match_p[i] for i in dims]
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


def scorer(
    z: np.ndarray | torch.Tensor, names: Sequence[str] | None, **kwargs: Any
) -> Callable[[Any], EvalResult]:
    """:func:`evaluate` as a function of the encodings alone, with ``z``, ``names`` and every
    protocol argument fixed: one protocol for an encoder and for its baselines."""

    def score(h: Any) -> EvalResult:
        return evaluate(h, z, names, **kwargs)

    return score


def _score_blocks(
    ht: torch.Tensor,
    zt: torch.Tensor,
    blocks: dict[str, list[int]],
    pos: dict[int, int],
    disc: list[int],
    ker: Any,
    acc: Any,
    fit_fraction: float,
    roles: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """Per block: its factors, the mean linear (and kernel) R^2 of its continuous factors,
    the mean accuracy of its discrete ones, and its role with the theory's prediction."""
    from ident3d.eval.factors import THEORY

    cont_blocks = {k: [c for c in v if c in pos] for k, v in blocks.items()}
    cont_blocks = {k: v for k, v in cont_blocks.items() if v}
    # per-factor regressions are independent: a block's linear score is the mean of its
    # factors' scores (computed again by block_r2 for the record), its kernel score too
    bl = (
        metrics.block_r2(ht, zt, cont_blocks, "linear", fit_fraction=fit_fraction).blocks
        if cont_blocks
        else {}
    )
    out: dict[str, dict[str, Any]] = {}
    for name, cols in blocks.items():
        b = bl.get(name, {})
        scored = [c for c in cols if c in pos or c in disc]
        per = dict(zip(b.get("factors", []), b.get("per_factor", []), strict=True))
        entry: dict[str, Any] = {
            "factors": [int(c) for c in cols],
            "scored": [int(c) for c in scored],
            "r2": b.get("r2"),
            "per_factor": [per.get(int(c)) for c in cols],
            "kernel_r2": (
                float(np.mean([ker.per_factor[pos[c]] for c in cont_blocks[name]]))
                if ker and name in cont_blocks
                else None
            ),
        }
        dcols = [c for c in cols if c in disc]
        if acc is not None and dcols:
            entry["accuracy"] = float(np.mean([acc.per_factor[disc.index(c)] for c in dcols]))
            entry["chance"] = float(np.mean([acc.chance[disc.index(c)] for c in dcols]))
        if name in roles:
            entry["role"] = roles[name]
            entry["theory"] = THEORY.get(roles[name])
        if not ker:
            entry.pop("kernel_r2")
        out[name] = entry
    return out
