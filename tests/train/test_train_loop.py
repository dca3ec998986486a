"""Tests of ident3d.train.loop: training end to end, resuming bit for bit, CUDA."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from train_helpers import TINY, _rows, _run_cli

from ident3d.train import load_run, resolve_config, train


def test_synthetic_aninfonce_end_to_end(tmp_path):
    out = tmp_path / "run"
    code, _ = _run_cli(
        ["train", *TINY, "--loss", "aninfonce", "--lambdas", "20,40,80", "--steps", "30",
         "--eval-every", "15", "--checkpoint-every", "10", "--log-every", "7", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["format"] == "ident3d-run/1"
    assert (
        cfg["data"]["lambdas"] == [20.0, 40.0, 80.0] and cfg["data"]["space"] == "extended_sphere"
    )
    assert cfg["model"]["hidden"] == [16, 16] and cfg["model"]["constraint"] == "sphere"
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["last.pt", "step-00000010.pt", "step-00000020.pt", "step-00000030.pt"]
    train_rows = _rows(out, "train")
    assert [r["step"] for r in train_rows] == list(range(1, 31))  # every step is logged
    m = 2 * 32 - 2
    for r in train_rows:
        assert r["mi_bound"] == pytest.approx(np.log(m + 1) - r["loss"])
        assert r["negatives"] == m  # per anchor: 2B - 2 of the batch of B = 32 pairs
        assert len(r["lambda"]) == 3
    evals = _rows(out, "eval")
    assert [r["step"] for r in evals] == [15, 30]
    for key in ("r2", "mcc", "r2_per_dim", "match", "lambda", "lambda_rel_error"):
        assert key in evals[-1]
    # the checkpoint is a plain dict readable with weights_only=True
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 30 and "theta" in ck["loss"]
    run = load_run(out)
    assert run.step == 30 and not run.encoder.training
    assert run.lambdas is not None and np.allclose(run.lambdas, evals[-1]["lambda"], rtol=1e-5)
    # the DGP draws fresh seeded samples that the encoder maps to the unit sphere
    z, x = run.dgp.sample(64, torch.Generator().manual_seed(1))
    assert z.shape == (64, 3) and x.shape == (64, 3)
    z2, _ = run.dgp.sample(64, torch.Generator().manual_seed(1))
    assert torch.equal(z, z2)
    h = run.encode(x)
    assert torch.allclose(h.norm(dim=1), torch.ones(64), atol=1e-5)
    # an intermediate checkpoint loads too
    assert load_run(out / "checkpoints" / "step-00000010.pt").step == 10


def test_training_lowers_the_loss(tmp_path):
    # a short run on CPU: the loss falls and the MI bound rises; identifiability itself needs
    # thousands of steps (benchmarks/reproduce_aninfonce.py, docs/results.md)
    out = tmp_path / "run"
    cfg = resolve_config(
        {"seed": 1, "steps": 200, "batch_size": 128,
         "data": {"kind": "synthetic", "n": 3, "space": "extended_sphere",
                  "conditional": "anisotropic", "lambdas": [20.0, 40.0, 80.0], "mixing_depth": 2},
         "loss": {"name": "infonce", "similarity": "lp", "p": 2.0, "temperature": 0.05},
         "model": {"hidden": [32, 32]}, "optim": {"lr": 3e-3},
         "loop": {"eval_every": 40, "checkpoint_every": 0, "eval_samples": 512, "threads": 1}}
    )  # fmt: skip
    train(cfg, out, progress=False)
    rows = _rows(out, "train")
    first, last = rows[:20], rows[-20:]
    assert np.mean([r["loss"] for r in last]) < np.mean([r["loss"] for r in first]) - 0.1
    assert np.mean([r["mi_bound"] for r in last]) > np.mean([r["mi_bound"] for r in first]) + 0.1
    evals = _rows(out, "eval")
    assert [e["step"] for e in evals] == [40, 80, 120, 160, 200]
    # R^2 is only bounded here: over 200 steps it moves by noise (0.70-0.78 at this seed)
    assert all(0.5 < e["r2"] <= 1.0 and len(e["r2_per_dim"]) == 3 for e in evals)


def test_resume_continues_exactly(tmp_path):
    """A finished run continued to more steps equals the run made that long at once (with a
    warm-up, which does not depend on the total; a cosine does: see the SIGKILL test)."""
    args = [*TINY, "--loss", "infonce", "--eval-every", "10", "--checkpoint-every", "10",
            "--warmup-steps", "5"]  # fmt: skip
    full, part = tmp_path / "full", tmp_path / "part"
    assert _run_cli(["train", *args, "--steps", "40", "--out", str(full)])[0] == 0
    assert _run_cli(["train", *args, "--steps", "20", "--out", str(part)])[0] == 0
    assert (
        _run_cli(["train", "--resume", "--steps", "40", "--no-progress", "--out", str(part)])[0]
        == 0
    )
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)
    for k in a["encoder"]:
        assert torch.equal(a["encoder"][k], b["encoder"][k]), k
    assert _rows(full, "train") == _rows(part, "train")
    assert _rows(full, "eval") == _rows(part, "eval")
    lrs = [r["lr"] for r in _rows(full, "train")]
    assert lrs[:5] == pytest.approx([2e-5, 4e-5, 6e-5, 8e-5, 1e-4]) and set(lrs[4:]) == {1e-4}


def test_resume_after_sigkill_is_bit_for_bit(tmp_path):
    """Kill a training process after a checkpoint, resume it, and compare with a run that was
    never interrupted: the same final weights, lambdas, optimiser state and metrics."""
    args = [*TINY, "--loss", "aninfonce", "--lambdas", "20,40,80", "--steps", "150",
            "--eval-every", "50", "--checkpoint-every", "25", "--log-every", "5",
            "--lr-schedule", "cosine", "--warmup-steps", "10", "--min-lr-ratio", "0.1"]  # fmt: skip
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ident3d", "train", *args, "--out", str(killed)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    target = killed / "checkpoints" / "step-00000050.pt"
    deadline = time.monotonic() + 120
    while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    ck = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    assert 25 <= ck["step"] < 150  # it really stopped part-way, after a checkpoint
    r = subprocess.run(
        [sys.executable, "-m", "ident3d", "train", "--resume", "--no-progress", "--out", str(killed)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert _run_cli(["train", *args, "--out", str(clean)])[0] == 0
    a = torch.load(clean / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 150
    for part in ("encoder", "loss"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    for k in sa:
        assert torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"])
    assert torch.equal(
        a["rng"]["source"][0]["data_generator"], b["rng"]["source"][0]["data_generator"]
    )
    assert _rows(clean, "train") == _rows(killed, "train")
    assert _rows(clean, "eval") == _rows(killed, "eval")
    lrs = [r["lr"] for r in _rows(clean, "train")]
    assert lrs[0] == pytest.approx(1e-5) and lrs[9] == pytest.approx(1e-4)
    assert lrs[-1] == pytest.approx(1e-5) and all(a >= b for a, b in itertools.pairwise(lrs[9:]))


@pytest.mark.gpu
def test_cuda_run_with_bf16_autocast(tmp_path):
    out = tmp_path / "run"
    cfg = resolve_config({"steps": 20, "batch_size": 256, "data": {"kind": "synthetic"},
                          "loss": {"name": "aninfonce"},
                          "loop": {"eval_every": 20, "device": "cuda", "amp": "auto"}})  # fmt: skip
    train(cfg, out, progress=False)
    ev = _rows(out, "eval")[-1]
    assert ev["step"] == 20 and np.isfinite(ev["r2"])
    run = load_run(out, device="cuda")
    _, x = run.dgp.sample(128, torch.Generator(device="cuda").manual_seed(0))
    assert run.encode(x).device.type == "cuda"
