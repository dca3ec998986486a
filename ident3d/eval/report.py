"""The report as text: the terminal and markdown tables (:func:`format_table`,
:func:`render_markdown`), the report format, and the atomic writes every report file uses.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORT_FORMAT = "ident3d-eval/1"
REPORT_FILE = "report.json"


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


def _md_cell(text: str) -> str:
    """A markdown table cell: pipes escaped (``|r|`` would otherwise split the cell)."""
    return text.replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], markdown: bool) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    if markdown:
        header = [_md_cell(h) for h in header]
        cells = [[_md_cell(c) for c in r] for r in cells]
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
    has_acc = report.get("accuracy") is not None
    header = ["#", "factor", "linear R2"]
    if has_kernel:
        header.append("kernel R2")
    header += ["|r| Pearson", "|r| Spearman", "matched dim"]
    if has_acc:
        header += ["accuracy", "chance"]
    rows = []
    for f in report["per_factor"]:
        row = [f["index"], f["name"], f["linear_r2"]]
        if has_kernel:
            row.append(f["kernel_r2"])
        row += [f["mcc_pearson"], f["mcc_spearman"], f["matched_dim_pearson"]]
        if has_acc:
            row += [f.get("accuracy"), f.get("chance")]
        rows.append(row)
    mean = ["", "mean", report["linear_r2"]]
    if has_kernel:
        mean.append(report["kernel_r2"])
    mean += [report["mcc_pearson"], report["mcc_spearman"], ""]
    if has_acc:
        mean += [report["accuracy"], ""]
    rows.append(mean)
    return header, rows


def format_table(report: dict[str, Any], markdown: bool = False) -> str:
    """The per-factor table of a report (plain text for the terminal, or markdown)."""
    header, rows = _factor_rows(report)
    return _table(header, rows, markdown)


def block_table(report: dict[str, Any], markdown: bool = False) -> str:
    """The blocks of a report: factors, role and the theory's prediction (when the blocks
    come from a pair structure), linear and kernel R^2, accuracy of discrete factors."""
    blocks = report["blocks"]
    has_role = any("role" in b for b in blocks.values())
    has_acc = any("accuracy" in b for b in blocks.values())
    header = ["block"] + (["role", "theory"] if has_role else []) + ["factors", "linear R2"]
    header += ["kernel R2"] + (["accuracy"] if has_acc else [])
    rows = []
    for name, b in blocks.items():
        row = [name] + ([b.get("role"), b.get("theory")] if has_role else [])
        row += [", ".join(report["per_factor"][c]["name"] for c in b["factors"]), b.get("r2")]
        row += [b.get("kernel_r2")] + ([b.get("accuracy")] if has_acc else [])
        rows.append(row)
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
    if "form" in src:  # an external encoder or embeddings (ident3d.eval.benchmark)
        feat = f", features {src['features']}" if src.get("features") else ""
        return f"{src['form']} {src.get('spec') or src.get('file')}{feat}; data: {data}"
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
                *(
                    [["accuracy (held-out, discrete factors)", report["accuracy"]]]
                    if report.get("accuracy") is not None
                    else []
                ),
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
    if report.get("constant_factors"):
        lines += [
            "Not scored, constant in the evaluated samples (nothing to predict; e.g. a fixed "
            "factor, or a view-specific one held constant in the encoded view): "
            + ", ".join(report["constant_factors"])
            + ". They are left out of the means and the block scores.",
            "",
        ]
    if report.get("blocks"):
        lines += ["## Blocks", "", block_table(report, markdown=True), ""]
        if any("role" in b for b in report["blocks"].values()):
            lines += [
                (
                    "Roles from the dataset's pair structure (manifest.json)."
                    if report.get("blocks_from") != "conditional dims"
                    else "Roles from the dataset's --dims render: content = the factors the "
                    "conditional kept identical in both views, style = those it changed."
                )
                + " The theory of multi-view contrastive "
                "learning predicts the content block recoverable from the encoding and the "
                "style and view-specific blocks not (beyond what they share with the content "
                "through dependencies).",
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
    from ident3d.eval.baseline import baseline_markdown

    lines += baseline_markdown(report)  # --baseline rows (nothing without them)
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
    if "accuracy" in p:
        a = p["accuracy"]
        lines.append(
            f"- accuracy (discrete factors {', '.join(a['factors'])}): multinomial logistic "
            f"regression (L2, C = 1), fitted on the first {a['n_fit']} samples, scored on the "
            f"other {a['n_score']}; chance = always the most frequent fit label. Discrete "
            "factors are left out of the R2 and MCC scores."
        )
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
