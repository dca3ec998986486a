"""The training harness: end to end on synthetic data and on a tiny store dataset, resume after
a kill, the run format that ``ident3d eval`` reads, and one-line errors for bad input."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ident3d.cli import cli, main
from ident3d.errors import UsageError
from ident3d.train import load_run, lr_factor, resolve_config, train

TINY = [
    "--data", "synthetic", "--n", "3", "--hidden", "16,16", "--batch-size", "32",
    "--eval-samples", "256", "--threads", "1", "--no-progress",
]  # fmt: skip


def _run_cli(args: list[str]) -> tuple[int, str]:
    r = CliRunner().invoke(cli, args, standalone_mode=False, catch_exceptions=True)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        if isinstance(r.exception, UsageError):
            return 2, str(r.exception)
        raise r.exception
    return r.exit_code or 0, r.output


def _rows(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows if r["kind"] == kind]


def _main_exit(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code, capsys.readouterr().err


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


def test_lr_factor_known_values():
    cos = {"schedule": "cosine", "warmup_steps": 10, "min_lr_ratio": 0.2}
    assert lr_factor(cos, 0, 111) == pytest.approx(0.1)
    assert lr_factor(cos, 9, 111) == pytest.approx(1.0)
    assert lr_factor(cos, 10, 111) == pytest.approx(1.0)
    assert lr_factor(cos, 60, 111) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor(cos, 110, 111) == pytest.approx(0.2)
    const = {"schedule": "constant", "warmup_steps": 4}
    assert [lr_factor(const, s, 100) for s in (0, 3, 50)] == pytest.approx([0.25, 1.0, 1.0])
    assert lr_factor({"lr": 1e-4}, 7, 10) == 1.0  # configs written before schedules existed


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


def test_single_process_path_does_not_initialise_distributed(tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "1")
    cfg = resolve_config({"steps": 3, "batch_size": 8, "data": {"kind": "synthetic", "n": 2},
                          "model": {"hidden": [8]},
                          "loop": {"eval_every": 0, "checkpoint_every": 0, "threads": 1}})  # fmt: skip
    train(cfg, tmp_path / "r", progress=False)
    assert not dist.is_initialized()
    assert (tmp_path / "r" / "checkpoints" / "last.pt").exists()  # the final checkpoint


def test_loss_family_options_train(tmp_path):
    for i, extra in enumerate(
        [["--similarity", "lp", "--p", "1", "--negatives", "cross"],
         ["--similarity", "cosine", "--temperature", "0.1", "--hard-negative-beta", "1.0"],
         ["--space", "box", "--conditional", "laplace", "--constraint", "box", "--similarity",
          "lp", "--p", "3"],
         ["--space", "unbounded", "--marginal", "normal", "--conditional", "normal",
          "--constraint", "none", "--similarity", "lp"]]
    ):  # fmt: skip
        out = tmp_path / f"r{i}"
        code, msg = _run_cli(
            ["train", *TINY, "--steps", "4", "--eval-every", "4", "--out", str(out), *extra]
        )
        assert code == 0, msg
        assert _rows(out, "eval")[-1]["step"] == 4


def test_ensemble_from_toml(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        'steps = 5\nbatch_size = 16\n[loss]\nname = "ensemble"\n'
        '[[loss.members]]\nweight = 0.5\nloss = {name = "infonce", similarity = "lp", p = 1.0}\n'
        "[[loss.members]]\nweight = 1.0\n"
        'loss = {name = "aninfonce", n = 3}\n'
        "[data]\nn = 3\n[model]\nhidden = [8]\n[loop]\neval_every = 5\nthreads = 1\n"
    )
    out = tmp_path / "r"
    code, msg = _run_cli(["train", "--config", str(toml), "--no-progress", "--out", str(out)])
    assert code == 0, msg
    cfg = json.loads((out / "config.json").read_text())
    assert [m["loss"]["name"] for m in cfg["loss"]["members"]] == ["infonce", "aninfonce"]
    run = load_run(out)
    assert run.lambdas is not None and run.lambdas.shape == (3,)
    assert "lambda" in _rows(out, "train")[0]


# --------------------------------------------------------------------------- stored datasets


def _make_store(root: Path, kind: str, n: int, size: int = 32, dim: int = 3) -> None:
    from ident3d.store import ShardWriter, create_dataset, shard_range

    rng = np.random.default_rng(0)
    views = (n, 2) if kind == "pairs" else (n,)
    raw = rng.uniform(-1, 1, (*views, dim)).astype(np.float32)
    # images that depend on the latents, so an encoder can learn something
    base = ((raw[..., :1, None, None] + 1) * 120).astype(np.uint8)
    images = np.broadcast_to(base.reshape(*views, 1, 1, 1), (*views, size, size, 3)).copy()
    images[..., 0] = ((raw[..., 1:2, None] + 1) * 120).astype(np.uint8)
    manifest = create_dataset(root, kind, n, 16, size, size, dim, config={"test": True})
    for k in range(manifest["num_shards"]):
        start, count = shard_range(manifest, k)
        with ShardWriter(root, k, start, count, kind, size, size, dim) as w:
            scene = np.zeros((count, 2, 10) if kind == "pairs" else (count, 10), np.float32)
            w.write_batch(0, images[start : start + count], raw[start : start + count], scene)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stores")
    out = {"pairs": base / "pairs", "images": base / "images"}
    _make_store(out["pairs"], "pairs", 48)
    _make_store(out["images"], "images", 64)
    return out


DS_ARGS = [
    "--encoder", "resnet18", "--batch-size", "8", "--steps", "6", "--eval-every", "6",
    "--checkpoint-every", "3", "--eval-samples", "16", "--num-workers", "0", "--threads", "1",
    "--no-progress",
]  # fmt: skip


def test_dataset_exact_pairs_end_to_end_and_resume(tmp_path, stores):
    out = tmp_path / "run"
    code, msg = _run_cli(["train", "--data", str(stores["pairs"]), *DS_ARGS, "--out", str(out)])
    assert code == 0, msg
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["pairs"] == "exact" and len(cfg["data"]["mean"]) == 3
    assert cfg["model"]["n_out"] == 3 and cfg["model"]["head_features"] == 30
    ev = _rows(out, "eval")[-1]
    assert ev["step"] == 6 and len(ev["r2_per_dim"]) == 3
    run = load_run(out)
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    xp = run.preprocess(x)
    assert xp.shape == (2, 3, 32, 32) and xp.dtype == torch.float32
    mean = torch.tensor(cfg["data"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["data"]["std"]).view(1, 3, 1, 1)
    ref = (x.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.allclose(xp, ref, atol=1e-5)
    assert run.encode(xp).shape == (2, 3)
    # the data position is a function of the step: resuming from step 3 ends identically
    part = tmp_path / "part"
    args = [a if a != "6" else "3" for a in DS_ARGS]
    assert _run_cli(["train", "--data", str(stores["pairs"]), *args, "--out", str(part)])[0] == 0
    assert (
        _run_cli(["train", "--resume", "--steps", "6", "--no-progress", "--out", str(part)])[0] == 0
    )
    a = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["encoder"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["encoder"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_dataset_knn_pairs_from_iid_images(tmp_path, stores):
    out = tmp_path / "run"
    code, msg = _run_cli(
        ["train", "--data", str(stores["images"]), *DS_ARGS, "--steps", "3", "--out", str(out)]
    )
    assert code == 0, msg
    assert json.loads((out / "config.json").read_text())["data"]["pairs"] == "knn"
    assert _rows(out, "eval")[-1]["step"] == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--data", "/nonexistent/dataset"], "does not exist"),
        (["--encoder", "resnet19"], "resnet19"),
        (["--batch-size", "1000"], "larger than the dataset"),
        (["--pairs", "exact", "--data-kind-images"], "single images"),
    ],
)
def test_bad_dataset_input_exits_2(tmp_path, stores, capsys, args, fragment):
    data = stores["pairs"]
    if "--data-kind-images" in args:
        args = [a for a in args if a != "--data-kind-images"]
        data = stores["images"]
    full = ["train", "--data", str(data), *DS_ARGS, *args, "--out", str(tmp_path / "r")]
    if "--data" in args:
        full = ["train", *DS_ARGS, *args, "--out", str(tmp_path / "r")]
    code, err = _main_exit(full, capsys)
    assert code == 2
    assert err.startswith("error:") and fragment in err and err.count("\n") == 1


def test_bad_synthetic_input_exits_2(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "x").write_text("")
    code, err = _main_exit(["train", *TINY, "--steps", "2", "--out", str(out)], capsys)
    assert code == 2 and "not empty" in err
    code, err = _main_exit(["train", *TINY, "--space", "box", "--conditional", "vmf",
                            "--out", str(tmp_path / "s")], capsys)  # fmt: skip
    assert code == 2 and "sphere" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[loop]\nevals = 3\n")
    code, err = _main_exit(["train", "--config", str(bad), "--out", str(tmp_path / "t")], capsys)
    assert code == 2 and "loop.evals" in err
    code, err = _main_exit(["train", "--resume", "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "config.json" in err
    code, err = _main_exit(["train", *TINY, "--lr-schedule", "cosine", "--min-lr-ratio", "2",
                            "--out", str(tmp_path / "u")], capsys)  # fmt: skip
    assert code == 2 and "min_lr_ratio" in err and not (tmp_path / "u").exists()


def test_load_run_rejects_foreign_files(tmp_path):
    with pytest.raises(UsageError):
        load_run(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"format": "ident3d-run/1"}))
    bogus = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(UsageError):
        load_run(bogus)
    out = tmp_path / "run"
    train(resolve_config({"steps": 2, "batch_size": 8, "data": {"kind": "synthetic", "n": 2},
                          "model": {"hidden": [8]}, "loop": {"eval_every": 0, "threads": 1}}),
          out, progress=False)  # fmt: skip
    cfg = json.loads((out / "config.json").read_text())
    cfg["model"]["hidden"] = [9]
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError, match="does not match"):
        load_run(out)


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
