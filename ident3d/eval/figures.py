"""The figures of a report: predicted vs true factors, R^2 bars, learned vs true lambdas
(matplotlib, Agg backend, no pyplot state).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.eval.report import _atomic_write, _fmt, _source_line

#: Points per panel in the predicted-vs-true figures (an evenly spaced subset beyond that).
PLOT_POINTS = 2000
#: Lowest score the bar figures show; a bar below it is cut there and marked with its value.
BAR_FLOOR = -0.5


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
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, v, width, label=name)
        for xi, vi in zip(pos, v, strict=True):  # cut by the axis: say so, with the value
            if vi < BAR_FLOOR:
                ax.plot([xi], [BAR_FLOOR], marker="v", color="black", ms=5, clip_on=False)
                ax.annotate(
                    _fmt(float(vi), 2),
                    (xi, BAR_FLOOR),
                    xytext=(0, 4),
                    textcoords="offset points",
                    ha="center",
                    fontsize=6,
                    rotation=90,
                )
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    finite = [a for s in series.values() for a in s if a is not None and math.isfinite(a)]
    lo = min([0.0, *finite])
    ax.set_ylim(max(lo, BAR_FLOOR), 1.02)
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
    if report.get("accuracy") is not None:  # discrete factors: held-out accuracy
        series["accuracy (discrete)"] = [f.get("accuracy") for f in pf]
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


def plot_blocks(report: dict[str, Any]) -> Any:
    """Per block: linear and kernel R^2 of its continuous factors, accuracy of its discrete
    ones; a block with a role is labelled ``name (role)``, the theory's prediction beneath."""
    blocks = report["blocks"]
    labels = [
        (name if name == b["role"] else f"{name} ({b['role']})") + f"\n{b.get('theory', '')}"
        if "role" in b
        else name
        for name, b in blocks.items()
    ]
    series: dict[str, list[Any]] = {"linear R2": [b.get("r2") for b in blocks.values()]}
    if any(b.get("kernel_r2") is not None for b in blocks.values()):
        series["kernel R2"] = [b.get("kernel_r2") for b in blocks.values()]
    if any("accuracy" in b for b in blocks.values()):
        series["accuracy"] = [b.get("accuracy") for b in blocks.values()]
    fig = _figure(max(5.0, 1.6 * len(blocks) + 2.5), 4.2)
    ax = fig.add_subplot(1, 1, 1)
    _bars(ax, labels, series, "score")
    ax.set_title("blocks: " + _source_line(report), fontsize=8)
    fig.tight_layout()
    return fig
