"""``ident3d eval``: score a trained encoder's identifiability and write a report.

User guide: ``docs/eval.md``. The pipeline, each step usable on its own::

    from ident3d import eval as ev

    data = ev.encode_synthetic(run, n=14336, seed=0)       # or ev.encode_dataset(run, "data/test")
    result = ev.evaluate(data.h, data.z, data.names, learned_lambdas=run.lambdas, ...)
    ev.write_report(result, "out/")                          # report.json, report.md, PNGs
    print(ev.format_table(result.report))

or all at once with :func:`evaluate_run`. :func:`compare` puts several reports side by side.

``report.json`` (format ``ident3d-eval/1``) holds the headline numbers ``linear_r2``,
``kernel_r2`` (None when skipped), ``mcc_pearson``, ``mcc_spearman``, a ``per_factor`` list
(``name``, ``index`` and every per-factor score), the ``protocol`` of every metric, block
scores, the lambda comparison of AnInfoNCE runs, timings and where the numbers came from (run,
checkpoint, step, dataset, sample counts).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ident3d import metrics
from ident3d.errors import DataError, UsageError

REPORT_FORMAT = "ident3d-eval/1"
REPORT_FILE = "report.json"
#: Samples drawn for a synthetic run by default: 10,240 for kernel ridge to fit + 4,096 scored.
SYNTHETIC_SAMPLES = metrics.KERNEL_FIT_SAMPLES + 4096
#: Points per panel in the predicted-vs-true figures (an evenly spaced subset beyond that).
PLOT_POINTS = 2000


# ============================================================================ inputs


@dataclass
class EvalData:
    """Encodings ``h`` ``(N, d_h)`` and factors ``z`` ``(N, d_z)`` (float64), factor
    ``names``, where they came from (``dataset``) and how long encoding took."""

    h: np.ndarray
    z: np.ndarray
    names: list[str]
    dataset: dict[str, Any]
    encode_s: float


def factor_names(d: int, table: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """Names for ``d`` factor columns: the dataset's factor table (or 3DIdent's, from
    :mod:`ident3d.latents`) when it has exactly ``d`` entries, else ``z0 .. z{d-1}``."""
    if table is None:
        from ident3d.latents import factor_table

        table = factor_table()
    names = [str(row.get("name", "")) for row in table]
    if len(names) == d and all(names) and len(set(names)) == d:
        return names
    return [f"z{i}" for i in range(d)]


def _progress(total: int, desc: str, enabled: bool | None) -> Any:
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, file=sys.stderr)


def encode_synthetic(
    run: Any,
    n: int = SYNTHETIC_SAMPLES,
    seed: int = 0,
    batch_size: int = 4096,
    progress: bool | None = None,
) -> EvalData:
    """Encode ``n`` fresh samples of a synthetic run's own data-generating process, drawn
    from a ``torch.Generator`` seeded with ``seed`` on the run's device."""
    if run.dgp is None:
        raise UsageError(
            f"run {run.path} was trained on a dataset, not synthetic data: pass --data DIR."
        )
    if n < 4:
        raise UsageError(f"too few samples: {n} (need at least 4).")
    t0 = time.perf_counter()
    gen = torch.Generator(device=run.dgp.device)
    gen.manual_seed(int(seed))
    z, x = run.dgp.sample(n, gen)
    hs = []
    with _progress(n, "encoding", progress) as bar, torch.inference_mode():
        for xb in torch.split(x, batch_size):
            hs.append(run.encoder(xb.to(run.device)).float())
            bar.update(len(xb))
    h = torch.cat(hs).double().cpu().numpy()
    spec = run.dgp.spec
    return EvalData(
        h=h,
        z=z.double().cpu().numpy(),
        names=[f"z{i}" for i in range(z.shape[1])],
        dataset={
            "kind": "synthetic",
            "seed": int(seed),
            "n": int(n),
            "space": spec.space,
            "conditional": spec.conditional,
            "latent_dim": int(spec.n),
        },
        encode_s=time.perf_counter() - t0,
    )


def _open_images(path: str | Path) -> tuple[Any, int | None, list[dict[str, Any]] | None]:
    """An :class:`ident3d.data.ImageDataset` (for a pairs dataset a ``PairDataset`` and the
    view to use: 0, the anchors ``x`` with latents ``z``) and the store's factor table."""
    from ident3d import data as data_mod

    layout = data_mod.detect_layout(path)
    pairs = layout == "pairs-folder"
    table = None
    if layout == "store":
        from ident3d.store import open_dataset

        stored = open_dataset(path)
        pairs = stored.kind == "pairs"
        table = stored.manifest.get("factor_table")
    if pairs:
        return data_mod.PairDataset(path), 0, table
    return data_mod.ImageDataset(path), None, table


def encode_dataset(
    run: Any,
    path: str | Path,
    n: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool | None = None,
) -> EvalData:
    """Encode the first ``n`` (default all) images of a dataset (the ident3d store or an
    original 3DIdent / Causal3DIdent folder; of a pairs dataset, the first view) in batches on
    the run's device, and return them with the dataset's raw latents."""
    if run.dgp is not None:
        raise UsageError(
            f"run {run.path} is a synthetic run: evaluate it with --data synthetic "
            "(fresh samples of its own data-generating process)."
        )
    from ident3d import data as data_mod

    ds, view, table = _open_images(path)
    total = len(ds)
    n = total if n is None else int(n)
    if n > total:
        raise UsageError(f"--samples {n} is more than the {total} samples of {path}.")
    if n < 4:
        raise UsageError(f"too few samples: {n} (need at least 4).")
    lat = np.asarray(ds.latents)
    if lat.size == 0 or lat.shape[0] != total:
        raise DataError(f"{path} has no latents for its {total} images.")
    if view is not None:
        lat = lat[:, view]
    z = lat[:n].astype(np.float64).reshape(n, -1)
    if not np.isfinite(z).all():
        raise DataError(f"{path} has NaN or infinite latents among its first {n} samples.")
    subset = torch.utils.data.Subset(ds, range(n)) if n < total else ds
    loader = data_mod.make_loader(
        subset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=run.device.type == "cuda",
    )
    t0 = time.perf_counter()
    hs = []
    seen = 0
    with _progress(n, "encoding", progress) as bar, torch.inference_mode():
        for batch in loader:
            x = batch[0]
            x = run.preprocess(x.to(run.device, non_blocking=True))
            hs.append(run.encoder(x).float())  # stays on the device: no sync per batch
            seen += len(x)
            bar.update(len(x))
    h = torch.cat(hs).double().cpu().numpy()
    if seen != n:  # pragma: no cover - a loader that skips samples would be a bug
        raise RuntimeError(f"encoded {seen} images, expected {n}")
    return EvalData(
        h=h,
        z=z,
        names=factor_names(z.shape[1], table),
        dataset={
            "kind": "images",
            "path": str(Path(path)),
            "layout": ds.layout,
            "view": view,
            "n_total": int(total),
            "n": int(n),
            "latents": "raw",
        },
        encode_s=time.perf_counter() - t0,
    )


# ============================================================================ evaluation


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
    """Factor groups given by factor names or column indices -> column indices."""
    out: dict[str, list[int]] = {}
    for block, cols in blocks.items():
        idx = []
        for c in cols:
            if isinstance(c, str) and c in names:
                idx.append(list(names).index(c))
            elif str(c).isdigit() and int(c) < len(names):
                idx.append(int(c))
            else:
                raise UsageError(
                    f"block {block}: {c!r} is neither a factor name ({', '.join(names)}) "
                    f"nor a column index below {len(names)}"
                )
        if not idx:
            raise UsageError(f"block {block} lists no factors")
        out[block] = idx
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


# ============================================================================ writing


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in cells]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in cells]
    return "\n".join(lines)


def _factor_rows(report: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    has_kernel = report.get("kernel_r2") is not None
    header = ["#", "factor", "linear R2"]
    if has_kernel:
        header.append("kernel R2")
    header += ["|r| Pearson", "|r| Spearman", "matched dim"]
    rows = []
    for f in report["per_factor"]:
        row = [f["index"], f["name"], f["linear_r2"]]
        if has_kernel:
            row.append(f["kernel_r2"])
        row += [f["mcc_pearson"], f["mcc_spearman"], f["matched_dim_pearson"]]
        rows.append(row)
    mean = ["", "mean", report["linear_r2"]]
    if has_kernel:
        mean.append(report["kernel_r2"])
    mean += [report["mcc_pearson"], report["mcc_spearman"], ""]
    rows.append(mean)
    return header, rows


def format_table(report: dict[str, Any], markdown: bool = False) -> str:
    """The per-factor table of a report (plain text for the terminal, or markdown)."""
    header, rows = _factor_rows(report)
    return _table(header, rows, markdown)


def _source_line(report: dict[str, Any]) -> str:
    src = report.get("source", {})
    ds = report.get("dataset", {})
    run = src.get("run", "?")
    step = src.get("step", "?")
    if ds.get("kind") == "synthetic":
        data = f"synthetic ({ds.get('n')} fresh samples, seed {ds.get('seed')})"
    elif ds:
        data = f"{ds.get('path')} ({ds.get('n')} of {ds.get('n_total')} images, {ds.get('layout')})"
    else:
        data = "arrays"
    return f"run {run}, step {step}; data: {data}"


def render_markdown(report: dict[str, Any], figures: Sequence[str] = ()) -> str:
    """``report.md``: summary, per-factor table, blocks, lambdas, protocol, figures."""
    p = report["protocol"]
    lines = ["# ident3d eval report", "", _source_line(report), ""]
    lines += [
        _table(
            ["metric", "value"],
            [
                ["linear R2 (held-out)", report["linear_r2"]],
                ["kernel R2 (held-out)", report["kernel_r2"]],
                ["MCC Pearson", report["mcc_pearson"]],
                ["MCC Spearman", report["mcc_spearman"]],
                ["samples", report["n_samples"]],
            ],
            markdown=True,
        ),
        "",
        "## Per factor",
        "",
        format_table(report, markdown=True),
        "",
    ]
    if report.get("blocks"):
        rows = [
            [
                name,
                ", ".join(report["per_factor"][c]["name"] for c in b["factors"]),
                b["r2"],
                b.get("kernel_r2"),
            ]
            for name, b in report["blocks"].items()
        ]
        lines += [
            "## Blocks",
            "",
            _table(["block", "factors", "linear R2", "kernel R2"], rows, markdown=True),
            "",
        ]
    lam = report.get("lambda")
    if lam and "true" in lam:
        rows = [
            [f, t, m, e]
            for f, t, m, e in zip(
                lam["factors"],
                lam["true"],
                lam["learned_matched"],
                lam["relative_error"],
                strict=True,
            )
        ]
        lines += [
            "## Learned lambda vs true Lambda (matched by the Pearson MCC matching)",
            "",
            _table(["factor", "true", "learned", "rel. error"], rows, markdown=True),
            "",
            f"mean relative error {_fmt(lam['mean_relative_error'])}, sorted "
            f"{_fmt(lam['mean_sorted_relative_error'])}, rank correlation "
            f"{_fmt(lam['rank_correlation'])}",
            "",
        ]
    elif lam:
        lines += ["## Learned lambda", "", ", ".join(f"{v:.3f}" for v in lam["learned"]), ""]
    lin = p["linear"]
    lines += [
        "## Protocol",
        "",
        f"- linear: OLS with intercept, fitted on the first {lin['n_fit']} samples, "
        f"scored on the other {lin['n_score']}.",
    ]
    k = p["kernel"]
    if "skipped" in k:
        lines.append(f"- kernel: skipped ({k['skipped']}).")
    else:
        lines.append(
            f"- kernel: RBF kernel ridge per factor, 3-fold grid search over alpha "
            f"{k['alphas']} x gamma {[round(g, 4) for g in k['gammas']]}, standardised, fitted "
            f"on {k['n_fit']} samples{' (reduced from 10240: too few samples)' if k['reduced'] else ''}"
            f", scored on the next {k['n_score']}."
        )
    lines.append(f"- MCC: mean |correlation| after Hungarian matching, {p['mcc']['n']} samples.")
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _atomic_write(path, buf.getvalue())


def plot_predictions(
    pred: np.ndarray, true: np.ndarray, names: Sequence[str], scores: Sequence[float], title: str
) -> Any:
    """Predicted against true, one panel per factor (at most :data:`PLOT_POINTS` points)."""
    d = true.shape[1]
    cols = min(5, d)
    rows = math.ceil(d / cols)
    fig = _figure(2.6 * cols, 2.6 * rows + 0.5)
    step = max(1, true.shape[0] // PLOT_POINTS)
    for i in range(d):
        ax = fig.add_subplot(rows, cols, i + 1)
        t, p = true[::step, i], pred[::step, i]
        ax.scatter(t, p, s=3, alpha=0.35, linewidths=0, color="tab:blue", rasterized=True)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--")
        ax.set_title(f"{names[i]}  R2={_fmt(scores[i], 3)}", fontsize=9)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("predicted", fontsize=8)
        if i >= d - cols:
            ax.set_xlabel("true", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _bars(ax: Any, labels: Sequence[str], series: dict[str, Sequence[Any]], ylabel: str) -> None:
    x = np.arange(len(labels))
    k = max(1, len(series))
    width = 0.8 / k
    for j, (name, vals) in enumerate(series.items()):
        v = np.array([np.nan if a is None else a for a in vals], dtype=float)
        ax.bar(x - 0.4 + width * (j + 0.5), v, width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    lo = min(
        0.0, float(np.nanmin([np.nan if a is None else a for s in series.values() for a in s]))
    )
    ax.set_ylim(max(lo, -0.5), 1.02)
    ax.axhline(0, color="black", lw=0.6)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def plot_r2_bars(report: dict[str, Any]) -> Any:
    """Per-factor bars: linear R^2, kernel R^2 and the matched |Pearson r|."""
    pf = report["per_factor"]
    series: dict[str, list[Any]] = {"linear R2": [f["linear_r2"] for f in pf]}
    if report.get("kernel_r2") is not None:
        series["kernel R2"] = [f["kernel_r2"] for f in pf]
    series["|r| (MCC match)"] = [f["mcc_pearson"] for f in pf]
    fig = _figure(max(6.0, 0.75 * len(pf) + 2), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    _bars(ax, [f["name"] for f in pf], series, "score")
    ax.set_title(_source_line(report), fontsize=8)
    fig.tight_layout()
    return fig


def plot_lambdas(lam: dict[str, Any]) -> Any:
    fig = _figure(4.2, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    t, m = np.array(lam["true"]), np.array(lam["learned_matched"])
    ax.scatter(t, m, color="tab:red", zorder=3)
    for f, x, y in zip(lam["factors"], t, m, strict=True):
        ax.annotate(f, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    hi = float(max(t.max(), m.max())) * 1.1
    ax.plot([0, hi], [0, hi], color="black", lw=0.8, ls="--")
    ax.set_xlabel("true Lambda")
    ax.set_ylabel("learned lambda (matched dim)")
    ax.set_title(f"mean rel. error {_fmt(lam['mean_relative_error'], 3)}", fontsize=9)
    fig.tight_layout()
    return fig


def write_report(result: EvalResult, out: str | Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the PNG figures into ``out``; return paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = result.report
    names = [f["name"] for f in rep["per_factor"]]
    written: list[Path] = []
    figures: list[str] = []
    for kind in ("kernel", "linear"):
        if kind in result.predictions:
            scores = [f[f"{kind}_r2"] for f in rep["per_factor"]]
            fig = plot_predictions(
                result.predictions[kind],
                result.targets[kind],
                names,
                scores,
                f"{kind} regression: predicted vs true on {len(result.targets[kind])} held-out "
                f"samples ({_source_line(rep)})",
            )
            _save(fig, out / f"pred_{kind}.png")
            figures.append(f"pred_{kind}.png")
    _save(plot_r2_bars(rep), out / "r2_bars.png")
    figures.insert(0, "r2_bars.png")
    lam = rep.get("lambda")
    if lam and "true" in lam:
        _save(plot_lambdas(lam), out / "lambdas.png")
        figures.append("lambdas.png")
    rep["figures"] = figures
    _atomic_write(out / "report.md", render_markdown(rep, figures).encode())
    _atomic_write(out / REPORT_FILE, (json.dumps(rep, indent=2) + "\n").encode())
    written += [out / REPORT_FILE, out / "report.md"] + [out / f for f in figures]
    return written


# ============================================================================ the command


def evaluate_run(
    run_path: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    *,
    samples: int | None = None,
    seed: int = 0,
    kernel: bool = True,
    kernel_fit: int | None = None,
    kernel_score: int | None = None,
    fit_fraction: float = 0.5,
    blocks: dict[str, Sequence[str | int]] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
) -> tuple[EvalResult, list[Path]]:
    """Load a run (directory or checkpoint), encode ``data`` (``"synthetic"`` or a dataset
    directory), compute every metric and write the report into ``out`` (default
    ``<run>/eval``, or ``<run>/eval-step-<8-digit step>`` for a checkpoint other than
    ``last.pt``). Returns the result and the written files."""
    from ident3d.train import load_run, pick_device

    dev = pick_device(device)
    run = load_run(run_path, dev)
    if str(data) == "synthetic":
        enc = encode_synthetic(
            run,
            n=SYNTHETIC_SAMPLES if samples is None else samples,
            seed=seed,
            batch_size=batch_size or 4096,
            progress=progress,
        )
    else:
        enc = encode_dataset(
            run,
            data,
            n=samples,
            batch_size=batch_size or 256,
            num_workers=num_workers,
            progress=progress,
        )
    true_lam = run.dgp.true_lambdas if run.dgp is not None else None
    spec = run.dgp.spec.to_dict() if run.dgp is not None else None
    lambda_dims = None
    if spec is not None and spec.get("dims") is not None:
        lambda_dims = [int(i) for i in spec["dims"]]
    if blocks:
        block_idx = resolve_blocks(blocks, enc.names)
    elif spec is not None:
        block_idx = default_blocks(enc.names, spec, None if true_lam is None else list(true_lam))
    else:
        block_idx = {}
    result = evaluate(
        enc.h,
        enc.z,
        enc.names,
        fit_fraction=fit_fraction,
        kernel=kernel,
        kernel_fit=kernel_fit,
        kernel_score=kernel_score,
        device=dev,
        learned_lambdas=run.lambdas,
        true_lambdas=true_lam if run.lambdas is not None else None,
        lambda_dims=lambda_dims,
        blocks=block_idx or None,
    )
    rep = result.report
    ck = Path(run_path)
    rep["source"] = {
        "run": str(run.path),
        "checkpoint": str(ck if ck.is_file() else ck / "checkpoints" / "last.pt"),
        "step": int(run.step),
        "loss": run.config.get("loss", {}).get("name"),
        "model": run.config.get("model", {}).get("kind"),
    }
    rep["dataset"] = enc.dataset
    rep["timing"]["encode_s"] = enc.encode_s
    rep["device"] = str(dev)
    rep["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    if out is None:  # RUN/eval for the last checkpoint, RUN/eval-step-<8-digit step> for another
        out = Path(run.path) / (
            "eval" if not ck.is_file() or ck.name == "last.pt" else f"eval-{ck.stem}"
        )
    out = Path(out)
    written = write_report(result, out)
    return result, written


# ============================================================================ comparing


def load_report(path: str | Path) -> dict[str, Any]:
    """A report from ``report.json``, a report directory, or a run directory (its
    ``eval/report.json``, where ``ident3d eval`` writes by default)."""
    p = Path(path)
    candidates = [p] if p.suffix == ".json" else [p / REPORT_FILE, p / "eval" / REPORT_FILE]
    for c in candidates:
        if c.is_file():
            try:
                rep = json.loads(c.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise DataError(f"{c} is not a readable JSON report.") from None
            if not isinstance(rep, dict) or rep.get("format") != REPORT_FORMAT:
                raise DataError(f"{c} is not an ident3d eval report.")
            rep.setdefault("_path", str(c))
            return rep
    if not p.exists():
        raise UsageError(f"{p} does not exist.")
    raise UsageError(
        f"{p} has no {REPORT_FILE} (nor eval/{REPORT_FILE}): run `ident3d eval --run {p} ...` first."
    )


def _labels(reports: Sequence[dict[str, Any]], paths: Sequence[str | Path]) -> list[str]:
    labels = []
    for rep, p in zip(reports, paths, strict=True):
        src = rep.get("source", {})
        base = Path(src["run"]).name if src.get("run") else Path(p).name
        labels.append(f"{base}@{src['step']}" if "step" in src else base)
    counts = {lab: labels.count(lab) for lab in labels}
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if counts[lab] > 1:
            seen[lab] = seen.get(lab, 0) + 1
            lab = f"{lab}#{seen[lab]}"
        out.append(lab)
    return out


def compare(paths: Sequence[str | Path], out: str | Path | None = None) -> tuple[str, list[Path]]:
    """Several reports side by side: one table (rows = reports; the headline scores, then the
    per-factor R^2, kernel when every report has it, else linear) and one figure (per-factor
    grouped bars). Writes ``compare.md``, ``compare.json`` and ``compare.png`` into ``out``
    when given. Returns the plain-text table and the written files."""
    if len(paths) < 2:
        raise UsageError("--compare needs at least two runs or reports.")
    reports = [load_report(p) for p in paths]
    labels = _labels(reports, paths)
    names = [f["name"] for f in reports[0]["per_factor"]]
    same = all([f["name"] for f in r["per_factor"]] == names for r in reports)
    kind = "kernel" if all(r.get("kernel_r2") is not None for r in reports) else "linear"
    header = ["run", "linear R2", "kernel R2", "MCC P", "MCC S", "samples"]
    if same:
        header += [f"{kind[0]}:{n}" for n in names]
    rows = []
    for lab, r in zip(labels, reports, strict=True):
        row = [lab, r["linear_r2"], r["kernel_r2"], r["mcc_pearson"], r["mcc_spearman"]]
        row.append(r["n_samples"])
        if same:
            row += [f[f"{kind}_r2"] for f in r["per_factor"]]
        rows.append(row)
    text = _table(header, rows, markdown=False)
    note = (
        f"per-factor columns: {kind} R2"
        if same
        else "reports have different factors: per-factor columns omitted"
    )
    text += f"\n({note})"
    written: list[Path] = []
    if out is not None:
        out = Path(out)
        md = "# ident3d eval comparison\n\n" + _table(header, rows, markdown=True)
        md += f"\n\n{note}\n\n" + "\n".join(
            f"- {lab}: {r.get('_path')}" for lab, r in zip(labels, reports, strict=True)
        )
        fig = _figure(max(7.0, 0.9 * len(names) + 3), 7.5 if same else 4.0)
        ax = fig.add_subplot(2 if same else 1, 1, 1)
        _bars(
            ax,
            ["linear R2", "kernel R2", "MCC Pearson", "MCC Spearman"],
            {
                lab: [r["linear_r2"], r["kernel_r2"], r["mcc_pearson"], r["mcc_spearman"]]
                for lab, r in zip(labels, reports, strict=True)
            },
            "score",
        )
        ax.set_title("headline scores", fontsize=9)
        if same:
            ax2 = fig.add_subplot(2, 1, 2)
            _bars(
                ax2,
                names,
                {
                    lab: [f[f"{kind}_r2"] for f in r["per_factor"]]
                    for lab, r in zip(labels, reports, strict=True)
                },
                f"{kind} R2",
            )
            ax2.set_title(f"per-factor {kind} R2", fontsize=9)
        fig.tight_layout()
        _save(fig, out / "compare.png")
        md += "\n\n![comparison](compare.png)\n"
        _atomic_write(out / "compare.md", md.encode())
        payload = {"labels": labels, "per_factor_kind": kind, "header": header, "rows": rows}
        _atomic_write(out / "compare.json", (json.dumps(_clean(payload), indent=2) + "\n").encode())
        written = [out / "compare.md", out / "compare.json", out / "compare.png"]
    return text, written


__all__ = [
    "REPORT_FORMAT",
    "SYNTHETIC_SAMPLES",
    "EvalData",
    "EvalResult",
    "compare",
    "default_blocks",
    "encode_dataset",
    "encode_synthetic",
    "evaluate",
    "evaluate_run",
    "factor_names",
    "format_table",
    "load_report",
    "plot_predictions",
    "plot_r2_bars",
    "render_markdown",
    "resolve_blocks",
    "write_report",
]
