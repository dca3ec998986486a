"""ident3d.eval.multimodal: per-encoder, per-factor scores and the shared/specific split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ident3d.cli import main
from ident3d.eval.multimodal import FACTORS, GROUPS, evaluate_image_text, logistic_accuracy
from ident3d.render.multimodal import MultimodalJob, render_multimodal
from ident3d.scenes import load_preset
from ident3d.train.multimodal import ImageTextConfig, train_image_text


def test_logistic_accuracy_finds_a_linear_code() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    h = np.column_stack([y + 0.1 * rng.normal(size=400), rng.normal(size=400)])
    acc, chance = logistic_accuracy(h, y, 200)
    assert acc > 0.97 and 0.25 < chance < 0.45
    acc0, _ = logistic_accuracy(rng.normal(size=(400, 2)), y, 200)
    assert acc0 < 0.5


def test_report_of_a_short_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preset = load_preset("multimodal3dident")
    for name, n, seed in (("train", 16, 0), ("val", 40, 1)):
        job = MultimodalJob(preset, "fast", 16, n, seed, renderer="mock")
        render_multimodal(job, tmp_path / name, workers=0, progress=False)
    cfg = ImageTextConfig(data=str(tmp_path / "train"), steps=2, batch_size=8,
                          image_encoder="convnet", device="cpu")  # fmt: skip
    run = train_image_text(cfg, tmp_path / "run")
    rep = evaluate_image_text(run, tmp_path / "val", kernel=False, device="cpu")
    assert [r["factor"] for r in rep["factors"]] == [f[0] for f in FACTORS]
    assert set(rep["summary"]) == set(GROUPS)
    for r in rep["factors"]:
        for enc in ("image", "text"):
            s = r[enc]
            assert ("accuracy" in s) == (r["kind"] == "discrete") and np.isfinite(s["skill"])
    assert json.loads((run / "eval" / "report.json").read_text())["n"] == 40
    md = (run / "eval" / "report.md").read_text()
    assert "| shared |" in md and "| text_phrasing | text-specific |" in md
    # the CLI: ident3d eval --run RUN --data DIR; a 3DIdent run's flags do not apply
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--run", str(run), "--data", str(tmp_path / "val"), "--no-kernel",
              "--out", str(tmp_path / "rep")])  # fmt: skip
    assert exc.value.code == 0 and (tmp_path / "rep" / "report.md").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--run", str(run), "--data", "synthetic"])
    assert exc.value.code == 2 and "image/text dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_shared_factors_rise_above_the_modality_specific(tmp_path: Path) -> None:
    """A short CPU run on mock-rendered pairs: both encoders recover the shared factors, and
    neither the modality-specific ones (docs/datasets.md has the numbers of a Blender run)."""
    preset = load_preset("multimodal3dident")
    for name, n, seed in (("train", 2000, 0), ("val", 800, 1)):
        job = MultimodalJob(preset, "fast", 32, n, seed, renderer="mock")
        render_multimodal(job, tmp_path / name, workers=0, progress=False)
    cfg = ImageTextConfig(data=str(tmp_path / "train"), steps=150, batch_size=64, lr=1e-3,
                          temperature=0.2, image_encoder="convnet", device="cpu")  # fmt: skip
    run = train_image_text(cfg, tmp_path / "run")
    s = evaluate_image_text(run, tmp_path / "val", device="cpu")["summary"]
    for enc in ("image", "text"):
        assert s["shared"][enc] > 0.5, s
        for group in ("image-specific", "text-specific"):
            assert s[group][enc] < 0.15, s
            assert s["shared"][enc] > s[group][enc] + 0.4, s
