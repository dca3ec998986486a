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
