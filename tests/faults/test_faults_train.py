"""Fault injection for ``ident3d train``: a real SIGKILL of a training subprocess at several
moments, SIGTERM / SIGINT (a clean stop with a checkpoint), then ``--resume``; the result must
equal an uninterrupted run bit for bit, with nothing left behind.

Kill moments are defined by files of the run (a checkpoint exists, ``metrics.jsonl`` has some
rows), never by elapsed time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ARGS = [
    "--data", "synthetic", "--n", "3", "--hidden", "16,16", "--batch-size", "32",
    "--eval-samples", "256", "--threads", "1", "--no-progress", "--loss", "aninfonce",
    "--lambdas", "20,40,80", "--steps", "60", "--eval-every", "20", "--checkpoint-every", "10",
    "--log-every", "3", "--lr-schedule", "cosine", "--warmup-steps", "5",
]  # fmt: skip
STEPS = 60
ENV = {**os.environ, "PYTHONHASHSEED": "0"}
#: Seconds a subprocess may take to reach a kill moment (a hung child fails, not hangs).
WAIT_LIMIT = 240


def _cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "ident3d", "train", *extra]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _cmd(*ARGS, "--out", str(out)), env=ENV, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before the kill moment: " + (
        proc.stderr.read().decode() if proc.stderr else ""
    )
    assert ready(), "kill moment not reached"


def _rows(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


def _leftovers(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*"))


def _resume(out: Path) -> None:
    r = subprocess.run(
        _cmd("--resume", "--no-progress", "--out", str(out)),
        env=ENV, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one is compared with (a subprocess too)."""
    out = tmp_path_factory.mktemp("clean") / "run"
    r = subprocess.run(
        _cmd(*ARGS, "--out", str(out)), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    return out


def _assert_same_as_clean(run: Path, clean: Path) -> None:
    a = torch.load(clean / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == STEPS
    for part in ("encoder", "loss"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for k, st in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[name], b["optimizer"]["state"][k][name]), (k, name)
    assert torch.equal(
        a["rng"]["source"][0]["data_generator"], b["rng"]["source"][0]["data_generator"]
    )
    assert _rows(clean) == _rows(run)  # every train and eval row, bit for bit
    assert _leftovers(run) == []  # no temporary files
    assert json.loads((run / "config.json").read_text()) == json.loads(
        (clean / "config.json").read_text()
    )


def _kill_at(out: Path, ready, attempts: int = 3) -> int:
    """Start a run, SIGKILL its whole process group at the moment ``ready()`` holds; return
    the step of the checkpoint it left (0: none).

    On a loaded machine the polling test process can be descheduled long enough for the tiny
    run to finish before the kill lands; such a trial proves nothing, so it is repeated in a
    fresh directory (up to ``attempts`` times) instead of failing."""
    for _ in range(attempts):
        proc = _start(out)
        try:
            deadline = time.monotonic() + WAIT_LIMIT
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert ready() or proc.poll() is not None, "kill moment not reached"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.returncode == -signal.SIGKILL:
            last = out / "checkpoints" / "last.pt"
            step = torch.load(last, weights_only=True)["step"] if last.exists() else 0
            if step < STEPS:
                return step
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read().decode()
        shutil.rmtree(out)  # the run finished before the kill: try again
    raise AssertionError(f"the run finished before the kill moment in {attempts} attempts")


def test_sigkill_after_a_checkpoint_then_resume_is_bit_for_bit(tmp_path, clean_run):
    out = tmp_path / "run"
    step = _kill_at(out, lambda: (out / "checkpoints" / "step-00000020.pt").exists())
    # it really stopped part-way, after a checkpoint: step-00000020.pt is written before
    # last.pt is replaced, so a kill between the two leaves last.pt at step 10
    assert 10 <= step < STEPS
    _resume(out)
    _assert_same_as_clean(out, clean_run)


def _metrics_lines(out: Path, n: int):
    def ready() -> bool:
        p = out / "metrics.jsonl"
        return p.exists() and p.read_text().count("\n") >= n

    return ready


@pytest.mark.slow
@pytest.mark.parametrize(
    "moment",
    ["config_written", "first_rows", "first_checkpoint", "between_checkpoints", "late"],
)
def test_sigkill_at_several_moments(tmp_path, clean_run, moment):
    """Killed before any checkpoint (config.json written, a few rows logged), right after the
    first checkpoint, between two checkpoints (rows beyond the checkpoint are cut on resume)
    and late in the run: each resumes to the uninterrupted run's result."""
    out = tmp_path / "run"
    ready = {
        "config_written": lambda: (out / "config.json").exists(),
        "first_rows": _metrics_lines(out, 2),
        "first_checkpoint": lambda: (out / "checkpoints" / "last.pt").exists(),
        "between_checkpoints": _metrics_lines(out, 35),
        "late": lambda: (out / "checkpoints" / "step-00000050.pt").exists(),
    }[moment]
    step = _kill_at(out, ready)
    assert step < STEPS
    _resume(out)
    _assert_same_as_clean(out, clean_run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_sigint_stop_at_a_checkpoint_and_resume(tmp_path, clean_run, sig):
    """SIGTERM / SIGINT: the run finishes the step it is in, writes a checkpoint of it, says
    so in one line and exits 128 + signal; ``--resume`` then equals the uninterrupted run."""
    out = tmp_path / "run"
    proc = _start(out)
    try:
        _wait_for(proc, lambda: (out / "checkpoints" / "step-00000010.pt").exists())
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=WAIT_LIMIT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = err.decode()
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}" in err and "--resume" in err, err
    assert "Traceback" not in err
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert 10 <= ck["step"] < STEPS
    # a clean point: the checkpoint covers exactly the rows logged so far, the last of them
    # being its own step
    assert ck["metrics_bytes"] == (out / "metrics.jsonl").stat().st_size
    train_rows = [r for r in _rows(out) if r["kind"] == "train"]
    assert train_rows[-1]["step"] == ck["step"]
    assert _leftovers(out) == []
    _resume(out)
    _assert_same_as_clean(out, clean_run)


def _make_images_store(root: Path, n: int = 48, size: int = 32) -> None:
    import numpy as np

    from ident3d.store import ShardWriter, create_dataset, shard_range

    rng = np.random.default_rng(0)
    raw = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    manifest = create_dataset(root, "images", n, 16, size, size, 3, config={"test": True})
    for k in range(manifest["num_shards"]):
        start, count = shard_range(manifest, k)
        with ShardWriter(root, k, start, count, "images", size, size, 3) as w:
            scene = np.zeros((count, 10), np.float32)
            w.write_batch(0, images[start : start + count], raw[start : start + count], scene)


def test_sigterm_to_the_group_with_loader_workers(tmp_path):
    """SIGTERM to the whole process group of a dataset run with DataLoader workers: the
    workers ignore it (a worker killed by it used to abort the step with a RuntimeError
    traceback), the main process stops at a checkpoint, and --resume equals a clean run."""
    data = tmp_path / "images"
    _make_images_store(data)
    args = [
        "--data", str(data), "--encoder", "resnet18", "--batch-size", "8", "--steps", "16",
        "--eval-every", "6", "--eval-samples", "16", "--checkpoint-every", "4",
        "--num-workers", "2", "--threads", "1", "--no-progress", "--log-every", "1",
    ]  # fmt: skip
    out, clean = tmp_path / "run", tmp_path / "clean"
    proc = subprocess.Popen(
        _cmd(*args, "--out", str(out)), env=ENV, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(proc, lambda: (out / "checkpoints" / "step-00000004.pt").exists())
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT_LIMIT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = err.decode()
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    step = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 4 <= step < 16
    _resume(out)
    r = subprocess.run(
        _cmd(*args, "--out", str(clean)), env=ENV, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    a = torch.load(clean / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 16
    for k in a["encoder"]:
        assert torch.equal(a["encoder"][k], b["encoder"][k]), k
    assert _rows(clean) == _rows(out) and _leftovers(out) == []
