"""ident3d.train.multimodal: the symmetric InfoNCE of the paper and a short image/text run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ident3d.cli import main
from ident3d.render.multimodal import MultimodalJob, render_multimodal
from ident3d.scenes import load_preset
from ident3d.text_encoder import TextConvEncoder, build_text_encoder
from ident3d.train.multimodal import (
    ImageTextConfig,
    load_image_text_run,
    symmetric_infonce,
    train_image_text,
)


def _reference_infonce(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    """multimodal-contrastive-learning utils/losses.py infonce_loss (cosine, CrossEntropy),
    symmetrised as main_imgtxt.py train_step does (lines 66-68)."""

    def one(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sim = torch.nn.CosineSimilarity(dim=-1)
        s11 = sim(a.unsqueeze(-2), a.unsqueeze(-3)) / tau
        s22 = sim(b.unsqueeze(-2), b.unsqueeze(-3)) / tau
        s12 = sim(a.unsqueeze(-2), b.unsqueeze(-3)) / tau
        d = s12.shape[-1]
        s11[..., range(d), range(d)] = float("-inf")
        s22[..., range(d), range(d)] = float("-inf")
        raw = torch.cat([torch.cat([s12, s11], -1), torch.cat([s22, s12.T], -1)], -2)
        return torch.nn.functional.cross_entropy(raw, torch.arange(2 * d))

    return 0.5 * (one(z1, z2) + one(z2, z1))


@pytest.mark.parametrize("tau", [1.0, 0.3])
def test_loss_is_the_papers(tau: float) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
    torch.testing.assert_close(symmetric_infonce(tau)(a, b), _reference_infonce(a, b, tau))


def test_text_encoder_by_name() -> None:
    enc = build_text_encoder({"name": "conv1d", "vocab_size": 30, "n_out": 4})
    assert isinstance(enc, TextConvEncoder)
    assert enc(torch.randint(0, 30, (5, 17))).shape == (5, 4)
    assert enc(torch.randint(0, 30, (5, 40))).shape == (5, 4)  # any sequence length
    with pytest.raises(Exception, match="unknown text encoder"):
        build_text_encoder({"name": "lstm", "vocab_size": 30, "n_out": 4})


@pytest.fixture(scope="module")
def mm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mmtrain") / "d"
    job = MultimodalJob(load_preset("multimodal3dident"), "fast", 16, 24, 0, renderer="mock")
    render_multimodal(job, root, workers=0, progress=False)
    return root


def test_short_run_writes_a_loadable_run(mm: Path, tmp_path: Path) -> None:
    cfg = ImageTextConfig(data=str(mm), steps=3, batch_size=8, lr=1e-3, image_encoder="convnet",
                          device="cpu", log_every=1)  # fmt: skip
    out = train_image_text(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)
    run = load_image_text_run(out)
    assert run.config.temperature == 1.0 and run.vocabulary.size > 10
    again = train_image_text(cfg, tmp_path / "run2")  # seeded: the same run twice
    a = torch.load(out / "checkpoints/final.pt", weights_only=True)
    b = torch.load(again / "checkpoints/final.pt", weights_only=True)
    for k, v in a["text_encoder"].items():
        torch.testing.assert_close(v, b["text_encoder"][k])


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_cli_bad_inputs(mm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--modality", "image-text", "--out", str(tmp_path / "r"), "--steps", "1"]
    cases = [
        (["--data", "synthetic"], "needs --data DIR"),
        (["--data", str(mm), "--loss", "aninfonce"], "--loss is not available"),
        (["--data", str(mm), "--temperature", "0"], "--temperature must be positive"),
        (["--data", str(mm), "--text-encoder", "lstm", "--encoder", "convnet"],
         "unknown text encoder"),
        (["--data", str(tmp_path)], "not an ident3d dataset"),
    ]  # fmt: skip
    for extra, msg in cases:
        assert _run([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], (extra, err)
    assert _run(["train", "--out", str(tmp_path / "s"), "--text-encoder", "conv1d"]) == 2
    assert "needs --modality image-text" in capsys.readouterr().err
    # text on a dataset without captions (a 3DIdent render): train, eval and export refuse it
    from ident3d import render as R
    from ident3d.latents import latent_model_from_options

    preset = load_preset("3dident")
    model = latent_model_from_options(space=preset.mapping("box").default_space(), sigma=0.1)
    job = R.RenderJob(preset=preset, mode="box", quality="fast", resolution=16,
                      objects=["teapot"], pairs=False, n=2, seed=0, model=model, renderer="mock")  # fmt: skip
    R.render_dataset(job, tmp_path / "img", workers=0, progress=False)
    for argv in ([*base, "--data", str(tmp_path / "img")],
                 ["export", str(tmp_path / "img"), str(tmp_path / "x"), "--split", "val"]):  # fmt: skip
        assert _run(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert "not an image/text dataset" in err[0] or "image/text datasets only" in err[0]
    assert not (tmp_path / "x").exists()
