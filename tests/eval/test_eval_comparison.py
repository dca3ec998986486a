"""Tests of ident3d.eval.comparison (ident3d eval's default output folder, ident3d compare)."""

from __future__ import annotations

from eval_helpers import _main

from ident3d import eval as ev


def test_eval_default_out_and_compare_runs(synthetic_run, capsys):
    code, _, err = _main(
        [
            *("eval", "--run", str(synthetic_run), "--data", "synthetic", "--samples", "200"),
            *("--no-kernel", "--seed", "3"),
        ],
        capsys,
    )
    assert code == 0, err
    rep = ev.load_report(synthetic_run)  # run dir -> RUN/eval/report.json
    assert rep["dataset"]["seed"] == 3
    ck10 = synthetic_run / "checkpoints" / "step-00000010.pt"
    code, _, err = _main(
        [
            "eval",
            "--checkpoint",
            str(ck10),
            "--data",
            "synthetic",
            "--samples",
            "200",
            "--no-kernel",
        ],
        capsys,
    )
    assert code == 0, err
    assert ev.load_report(synthetic_run / "eval-step-00000010")["source"]["step"] == 10
    text, written = ev.compare([synthetic_run, synthetic_run / "eval" / "report.json"])
    assert written == [] and "an3@20#1" in text and "an3@20#2" in text
