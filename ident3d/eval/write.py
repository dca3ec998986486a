"""Writing a report folder: :func:`write_report` (``report.json``, ``report.md``, the PNG
figures, ``blocks.png`` when there are blocks).
"""

from __future__ import annotations

import json
from pathlib import Path

from ident3d.eval.figures import _save, plot_blocks, plot_lambdas, plot_predictions, plot_r2_bars
from ident3d.eval.report import REPORT_FILE, _atomic_write, _source_line, render_markdown
from ident3d.eval.scoring import EvalResult


def write_report(result: EvalResult, out: str | Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the PNG figures into ``out``; return paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = result.report
    # the regressions' predictions cover the continuous factors (discrete ones: accuracy)
    cont = [f for f in rep["per_factor"] if f.get("type", "continuous") == "continuous"]
    names = [f["name"] for f in cont]
    written: list[Path] = []
    figures: list[str] = []
    for kind in ("kernel", "linear"):
        if kind in result.predictions:
            scores = [f[f"{kind}_r2"] for f in cont]
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
    if rep.get("blocks"):
        _save(plot_blocks(rep), out / "blocks.png")
        figures.append("blocks.png")
    lam = rep.get("lambda")
    if lam and "true" in lam:
        _save(plot_lambdas(lam), out / "lambdas.png")
        figures.append("lambdas.png")
    rep["figures"] = figures
    _atomic_write(out / "report.md", render_markdown(rep, figures).encode())
    _atomic_write(out / REPORT_FILE, (json.dumps(rep, indent=2) + "\n").encode())
    written += [out / REPORT_FILE, out / "report.md"] + [out / f for f in figures]
    return written
