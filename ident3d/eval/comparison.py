"""Side-by-side comparison of several reports: :func:`load_report` and :func:`compare`
(``compare.md``, ``compare.json``, ``compare.png``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ident3d.errors import DataError, UsageError
from ident3d.eval.figures import _bars, _figure, _save
from ident3d.eval.report import REPORT_FILE, REPORT_FORMAT, _atomic_write, _table
from ident3d.eval.scoring import _clean


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
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out} is a file, not a directory for compare.md")
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
