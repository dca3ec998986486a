"""The fan-out under faults: one job of ``render --jobs 3 --executor local`` SIGKILLed mid-way
(after it committed some of its shards), then finished by re-running the same command (default
suite) or re-submitted by the driver (``--retries``, slow); the driver itself SIGKILLed while its
jobs run, then re-run: it waits for the live jobs instead of submitting them again (slow).
Every result is compared with a single-process render, image for image and latent for latent."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ident3d import store
from ident3d.render.seeds import select_shards
from ident3d.store.format import pid_alive

N, SHARD, JOBS = 600, 25, 3
ARGS = ["--renderer", "mock", "--n", str(N), "--shard-size", str(SHARD), "--resolution", "32",
        "--mode", "box", "--quality", "fast", "--seed", "5", "--quiet"]  # fmt: skip
GROUP1 = select_shards(N // SHARD, (1, JOBS))


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ident3d", "render", "--out", str(out), *ARGS, *extra]


def _fan(out: Path, *extra: str) -> list[str]:
    return _cmd(out, "--jobs", str(JOBS), "--executor", "local", *extra)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ds"
    r = subprocess.run(_cmd(out, "--workers", "1"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def _same(a: Path, b: Path) -> None:
    x, y = store.open_dataset(a), store.open_dataset(b)
    sx, sy = x.read_slice(0, len(x)), y.read_slice(0, len(y))
    for f in ("images", "raw", "scene"):
        np.testing.assert_array_equal(getattr(sx, f), getattr(sy, f))


def _clean(root: Path) -> None:
    report = store.verify_dataset(root)
    assert report.ok and not report.missing and not report.warnings, report.lines()
    left = [p for p in [*root.iterdir(), *(root / store.RECORDS_DIR).iterdir()]
            if store.format._TMP_MARK in p.name]  # fmt: skip
    assert not left


def _children(pid: int) -> list[int]:
    kids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                kids.append(int(name))
    return kids


def _tree(pid: int) -> list[int]:
    out = [pid]
    for k in _children(pid):
        out += _tree(k)
    return out


def _wait(cond, proc: subprocess.Popen[str], what: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def _stop_tree(pid: int) -> list[int]:
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return []
    out = [pid]
    for k in _children(pid):  # listed after the parent stopped: no child can appear unseen
        out += _stop_tree(k)
    return out


def _job_pid(logs: Path, group: int) -> int | None:
    try:
        return int(json.loads((logs / "fanout.json").read_text())["jobs"][str(group)])
    except (OSError, ValueError, KeyError):
        return None


def _recorded(out: Path, shards: list[int]) -> int:
    return len(set(store.records.record_indices(out)) & set(shards))


def _kill_group1_midway(out: Path, proc: subprocess.Popen[str]) -> None:
    logs = out.parent / f"{out.name}.jobs"
    _wait(lambda: _job_pid(logs, 1) is not None, proc, "job 1 submitted")
    _wait(lambda: _recorded(out, GROUP1) >= 1, proc, "job 1 committed a shard")
    pid = _job_pid(logs, 1)
    assert pid is not None
    victims = _tree(pid)
    for v in victims:
        os.kill(v, signal.SIGKILL)
    assert _recorded(out, GROUP1) < len(GROUP1), "job 1 finished before it could be killed"


@pytest.mark.slow
def test_sigkill_of_one_job_is_resubmitted_and_the_dataset_completes(
    tmp_path: Path, reference: Path
) -> None:
    out = tmp_path / "ds"
    proc = subprocess.Popen(_fan(out, "--retries", "1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    _kill_group1_midway(out, proc)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "group 1 (job" in stdout and "re-submitted as job" in stdout
    assert "1 re-submission(s)" in stdout and "dataset complete, verified" in stdout
    _same(out, reference)
    _clean(out)


def test_sigkill_of_one_job_without_retries_then_rerun_completes(
    tmp_path: Path, reference: Path
) -> None:
    out = tmp_path / "ds"
    proc = subprocess.Popen(_fan(out, "--retries", "0"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    _kill_group1_midway(out, proc)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("error: 1 of 3 group(s) failed (group 1:"), stderr
    assert "re-run the same command" in lines[-1]
    done = len(store.read_manifest(out)["shards"])
    assert 16 < done < 24  # groups 0 and 2 in full, group 1 in part
    r = subprocess.run(_fan(out, "--retries", "0"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "submitted 1 job(s) (local) for groups 1 of 3" in r.stdout
    _same(out, reference)
    _clean(out)


@pytest.mark.slow
def test_driver_killed_then_rerun_waits_for_its_live_jobs(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "ds"
    logs = out.parent / f"{out.name}.jobs"
    # (its jobs inherit the driver's stdout and stderr: no pipes, or reading them would wait
    # for the jobs)
    proc = subprocess.Popen(_fan(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)  # fmt: skip
    _wait(lambda: all(_job_pid(logs, g) for g in range(JOBS)), proc, "jobs submitted")
    pids = [_job_pid(logs, g) for g in range(JOBS)]
    stopped: list[int] = []
    for p in pids:  # hold the jobs (each process before its children) so that they are surely
        if p:  # still running when the command is re-run
            stopped += _stop_tree(p)
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone: its local jobs go on
    proc.wait(timeout=60)
    try:
        assert stopped and any(pid_alive(p) for p in pids if p)
        rerun = subprocess.Popen(_fan(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)  # fmt: skip
        assert rerun.stdout is not None
        head = [rerun.stdout.readline(), rerun.stdout.readline()]
        assert head[1].startswith("waiting for 3 job(s) of an earlier run: groups [0, 1, 2]"), head
    finally:
        for v in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(v, signal.SIGCONT)
    rest, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "submitted" not in "".join(head) + rest and "dataset complete, verified" in rest
    _same(out, reference)
    _clean(out)
