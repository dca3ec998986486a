"""The fan-out (ident3d.render.fanout): ``render --jobs K`` through submitit's local executor
gives the single-process dataset bit for bit; the SLURM path is driven through submitit's own
sbatch/sacct mocks (the submitted script, its array shape and parameters, the tasks run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from render_helpers import _cli, _job

from ident3d import render as R
from ident3d import store

ARGS = ["--renderer", "mock", "--n", "48", "--shard-size", "4", "--resolution", "32",
        "--mode", "box", "--quality", "fast", "--seed", "5", "--quiet"]  # fmt: skip


def _same(a: Path, b: Path) -> None:
    x, y = (store.open_dataset(p) for p in (a, b))
    sx, sy = x.read_slice(0, len(x)), y.read_slice(0, len(y))
    for f in ("images", "raw", "scene"):
        np.testing.assert_array_equal(getattr(sx, f), getattr(sy, f))
    assert x.mean.tolist() == y.mean.tolist() and x.std.tolist() == y.std.tolist()


def test_three_local_jobs_equal_one_process_and_a_rerun_submits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, fan = tmp_path / "one", tmp_path / "fan"
    assert _cli(["render", "--out", str(one), *ARGS, "--workers", "1"], capsys)[0] == 0
    code, out, err = _cli(["render", "--out", str(fan), *ARGS, "--jobs", "3",
                           "--executor", "local"], capsys)  # fmt: skip
    assert code == 0, err
    assert "submitted 3 job(s) (local) for groups 0-2 of 3" in out
    assert "OK: 12 of 12 shards good (checksums and structure)" in out
    assert "[dataset complete, verified]" in out
    _same(fan, one)
    m = json.loads((fan / "manifest.json").read_text())  # merged: the file alone lists all
    assert [s["index"] for s in m["shards"]] == list(range(12))
    state = json.loads((tmp_path / "fan.jobs" / "fanout.json").read_text())
    assert state["groups"] == 3 and sorted(state["jobs"]) == ["0", "1", "2"]
    code, out, err = _cli(["render", "--out", str(fan), *ARGS, "--jobs", "3"], capsys)
    assert code == 0 and "submitted" not in out and "dataset complete, verified" in out


@pytest.mark.slow
def test_jobs_without_shard_size_give_every_job_a_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a for a in ARGS if a not in ("--shard-size", "4")]
    args[args.index("--n") + 1] = "6"
    code, out, err = _cli(["render", "--out", str(tmp_path / "d"), *args, "--jobs", "2"], capsys)
    assert code == 0, err
    assert "2 local job(s)" in out and "submitted 2 job(s) (local) for groups 0-1 of 2" in out
    m = store.read_manifest(tmp_path / "d")
    assert (m["shard_size"], m["num_shards"]) == (3, 2)


@pytest.mark.slow
@pytest.mark.bpy
def test_blender_fanout_equals_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("bpy")
    args = ["--n", "6", "--shard-size", "2", "--resolution", "32", "--quality", "fast",
            "--mode", "box", "--seed", "5", "--quiet"]  # fmt: skip
    one, fan = tmp_path / "one", tmp_path / "fan"
    assert _cli(["render", "--out", str(one), *args, "--workers", "1"], capsys)[0] == 0
    code, out, err = _cli(["render", "--out", str(fan), *args, "--jobs", "3"], capsys)
    assert code == 0 and "dataset complete, verified" in out, err
    _same(fan, one)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--executor", "slurm"], "--executor needs --jobs K"),
        (["--no-wait"], "--no-wait needs --jobs K"),
        (["--jobs", "2", "--shard", "0/2"], "--jobs and --shard exclude each other"),
        (["--jobs", "2", "--slurm-partition", "gpu"], "--slurm-partition needs --executor slurm"),
        (["--jobs", "2", "--executor", "slurm", "--slurm-time", "1:xx"], "--slurm-time '1:xx'"),
    ],
)
def test_bad_fanout_options_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    out = tmp_path / "d"
    code, _, err = _cli(["render", "--out", str(out), *ARGS, *argv], capsys)
    assert code == 2 and err.startswith(f"error: {message}"), err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "d.jobs").exists()


def test_slurm_time_forms() -> None:
    from ident3d.render.fanout import parse_time_minutes

    assert [parse_time_minutes(t) for t in ("90", "45:30", "1:30:00", "2-00:00:00", "1-2")] == [
        90, 46, 90, 2880, 1560]  # fmt: skip


def test_slurm_array_submitted_and_run_through_submitits_mocks(tmp_path: Path) -> None:
    import h5py  # noqa: F401  (before the mocks: its first import runs `uname -p`)
    from submitit.core import submission
    from submitit.slurm.test_slurm import mocked_slurm

    out, logs = tmp_path / "d", tmp_path / "logs"
    slurm = R.FanoutSlurm(partition="gpu", time="1:30:00", cpus=8, gpus=1, mem="16G",
                          array_parallelism=2, account="proj")  # fmt: skip
    kw = dict(jobs=3, executor="slurm", slurm=slurm, workers=0, shard_size=4, log_dir=logs,
              progress=False, poll=0.05, echo=lambda line: None)  # fmt: skip
    with mocked_slurm() as mock:
        said: list[str] = []
        summary = R.render_fanout(_job(n=24), out, wait=False, **{**kw, "echo": said.append})
        assert summary.job_ids == ["12_0", "12_1", "12_2"] and summary.submitted == [0, 1, 2]
        assert said[0] == "submitted 3 job(s) (slurm) for groups 0-2 of 3: job(s) 12_0, 12_1, 12_2"
        assert said[1].startswith(f"follow: squeue -j 12   (logs: {logs}/")
        assert said[2].startswith("finish: re-run this same command") and str(out) in said[2]
        sbatch = (logs / "12_submission.sh").read_text()
        lines = {ln.strip() for ln in sbatch.splitlines() if ln.startswith("#SBATCH")}
        for want in ("--array=0-2%2", "--partition=gpu", "--time=90", "--cpus-per-task=8",
                     "--gpus-per-node=1", "--mem=16G", "--account=proj", "--nodes=1",
                     "--ntasks-per-node=1", "--job-name=ident3d-render"):  # fmt: skip
            assert f"#SBATCH {want}" in lines, (want, sorted(lines))
        assert store.missing_shards(out) == list(range(6))
        for job_id in summary.job_ids:  # what each array task runs on its node
            with mock.job_context(job_id):
                submission.process_job(logs)
        assert store.missing_shards(out) == []  # committed by records only ...
        assert json.loads((out / "manifest.json").read_text())["shards"] == []
        mock.set_job_state("12", "COMPLETED", array=3)
        again = R.render_fanout(_job(n=24), out, wait=True, **kw)  # ... merged by the driver
        assert again.submitted == [] and again.complete
    assert [s["index"] for s in json.loads((out / "manifest.json").read_text())["shards"]] == [
        0, 1, 2, 3, 4, 5]  # fmt: skip
    ref = tmp_path / "ref"
    R.render_dataset(_job(n=24), ref, workers=0, shard_size=4, progress=False)
    _same(out, ref)


def test_a_job_that_fails_for_bad_input_is_reported_not_retried(tmp_path: Path) -> None:
    """A task's UsageError (here: --gpu with the CPU-only mock renderer) comes back as its error;
    the driver does not burn retries on it and ends with one line, exit status 1."""
    out = tmp_path / "d"
    calls: list[list[int]] = []

    class Inline:
        """An executor that runs each task at once, in this process."""

        def map_array(self, fn, groups):
            calls.append(list(groups))
            return [_Done(fn(g), i) for i, g in enumerate(groups)]

    store.create_dataset(out, "pairs", 8, 4, 32, 32, 10, {"x": 1})  # another dataset's plan
    with pytest.raises(store.UsageError, match="different"):
        R.render_fanout(_job(n=8), out, jobs=2, workers=0, shard_size=4, progress=False,
                        poll=0.01, echo=lambda s: None, make=lambda *a: Inline())  # fmt: skip
    with pytest.raises(R.FanoutFailed, match="2 of 2 group.*needs the Blender renderer"):
        R.render_fanout(_job(n=8, gpu=True), tmp_path / "d2", jobs=2, workers=0, shard_size=4,
                        retries=3, progress=False, poll=0.01, echo=lambda s: None,
                        make=lambda *a: Inline())  # fmt: skip
    assert calls == [[0, 1]]  # submitted once, never re-submitted


class _Done:
    def __init__(self, result: object, i: int) -> None:
        self._result, self.job_id = result, f"inline_{i}"

    def done(self) -> bool:
        return True

    def result(self) -> object:
        return self._result


def test_a_local_job_of_an_earlier_driver_is_done_only_when_its_process_is_gone(
    tmp_path: Path,
) -> None:
    """Re-attached local jobs have no process handle (submitit would call them done at once)."""
    import subprocess
    import sys

    import submitit

    from ident3d.render.fanout import _job_alive, _job_done

    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        job = submitit.LocalJob(folder=tmp_path, job_id=str(p.pid))
        assert job.done()  # submitit's own view, without the process handle
        assert _job_alive("local", job) and not _job_done("local", job)
    finally:
        p.kill()
        p.wait()
    assert _job_done("local", job) and not _job_alive("local", job)
