"""Tests of ident3d.eval.write: the files of a report folder."""

from __future__ import annotations

import json

from eval_helpers import _arrays
from PIL import Image

from ident3d import eval as ev
from ident3d.latents import FACTOR_NAMES


def test_write_report_files(tmp_path):
    h, z = _arrays(n=400)
    res = ev.evaluate(h, z, list(FACTOR_NAMES[:4]), kernel_fit=200, blocks={"pos": [0, 1, 2]})
    written = ev.write_report(res, tmp_path / "rep")
    names = {p.name for p in written}
    assert names == {
        "report.json",
        "report.md",
        "r2_bars.png",
        "pred_kernel.png",
        "pred_linear.png",
        "blocks.png",  # there are blocks
    }
    for p in written:
        if p.suffix == ".png":
            with Image.open(p) as im:
                assert im.format == "PNG" and im.size[0] > 300
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["format"] == ev.REPORT_FORMAT and len(rep["per_factor"]) == 4
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| 0 | pos_x |" in md and "## Blocks" in md and "pred_kernel.png" in md
    assert not [p for p in (tmp_path / "rep").iterdir() if p.name.startswith(".")]  # no temp files
    table = ev.format_table(rep)
    assert "pos_x" in table.splitlines()[2] and "mean" in table.splitlines()[-1]


def test_markdown_tables_escape_pipes(tmp_path):
    """The per-factor header |r| Pearson must not split its cell: every row of a markdown
    table has as many cells as the header."""
    h, z = _arrays(n=300)
    res = ev.evaluate(h, z, list(FACTOR_NAMES[:4]), kernel=False)
    ev.write_report(res, tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert r"\|r\| Pearson" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| #")]
    assert len(table) == 1

    def cells(line: str) -> int:
        return len(line.replace(r"\|", "").strip().strip("|").split("|"))

    block = md.split("## Per factor")[1].split("\n\n")[1].splitlines()
    assert len({cells(ln) for ln in block}) == 1 and cells(block[0]) == 6
    assert "|r| Pearson" in ev.format_table(res.report)  # the terminal table keeps |r|


def test_negative_r2_bars_below_the_axis_are_marked():
    from ident3d.eval.figures import BAR_FLOOR, plot_r2_bars

    h, z = _arrays(n=300)
    rep = ev.evaluate(h, z, list(FACTOR_NAMES[:4]), kernel=False).report
    rep["per_factor"][1]["linear_r2"] = -3.25
    rep["per_factor"][2]["linear_r2"] = -0.2  # shown whole: no mark
    fig = plot_r2_bars(rep)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == BAR_FLOOR
    marks = [t.get_text() for t in ax.texts]
    assert marks == ["-3.25"]
    assert [ln.get_marker() for ln in ax.lines].count("v") == 1


def test_compare_out_naming_a_file(tmp_path):
    import pytest

    from ident3d.errors import UsageError

    h, z = _arrays(n=300)
    res = ev.evaluate(h, z, list(FACTOR_NAMES[:4]), kernel=False)
    ev.write_report(res, tmp_path / "a")
    ev.write_report(res, tmp_path / "b")
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="is a file"):
        ev.compare([tmp_path / "a", tmp_path / "b"], tmp_path / "f")
