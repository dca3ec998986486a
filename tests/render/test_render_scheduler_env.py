"""``--shard auto``: the shard group from a scheduler's environment (ident3d.render.scheduler_env)."""

from __future__ import annotations

import pytest
from render_helpers import _cli

from ident3d.errors import UsageError
from ident3d.render.scheduler_env import resolve_shard


def test_explicit_and_absent_values_pass_through() -> None:
    assert resolve_shard(None, {}) is None
    assert resolve_shard("2/5", {"SLURM_ARRAY_TASK_ID": "4"}) == (2, 5)


def test_kubernetes_indexed_job_needs_the_count() -> None:
    env = {"JOB_COMPLETION_INDEX": "3"}
    assert resolve_shard("auto/8", env) == (3, 8)
    with pytest.raises(UsageError, match="auto/N with N the Job's completions"):
        resolve_shard("auto", env)
    with pytest.raises(UsageError, match="outside 0..2"):
        resolve_shard("auto/3", env)


def test_slurm_array_full_range_gives_the_count() -> None:
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0",
           "SLURM_ARRAY_TASK_MAX": "15", "SLURM_ARRAY_TASK_COUNT": "16"}  # fmt: skip
    assert resolve_shard("auto", env) == (5, 16)
    assert resolve_shard("AUTO/32", env) == (5, 32)
    partial = {
        **env,
        "SLURM_ARRAY_TASK_MIN": "3",
        "SLURM_ARRAY_TASK_COUNT": "2",
        "SLURM_ARRAY_TASK_MAX": "7",
    }  # fmt: skip  (a re-run of tasks 3 and 7)
    with pytest.raises(UsageError, match="not a full 0..N-1 range"):
        resolve_shard("auto", partial)
    assert resolve_shard("auto/16", partial) == (5, 16)


def test_kubernetes_index_wins_and_bad_values_are_one_line() -> None:
    both = {"JOB_COMPLETION_INDEX": "1", "SLURM_ARRAY_TASK_ID": "6"}
    assert resolve_shard("auto/4", both) == (1, 4)
    with pytest.raises(UsageError, match="neither is set"):
        resolve_shard("auto", {})
    with pytest.raises(UsageError, match="not an integer"):
        resolve_shard("auto/4", {"JOB_COMPLETION_INDEX": "x"})
    with pytest.raises(UsageError, match="I/N, auto or auto/N"):
        resolve_shard("automatic", {"JOB_COMPLETION_INDEX": "0"})


def test_cli_shard_auto_renders_the_indexed_group(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ident3d import store

    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    out = tmp_path / "d"
    args = ["render", "--renderer", "mock", "--out", str(out), "--n", "12", "--shard-size", "2",
            "--resolution", "16", "--mode", "box", "--quiet", "--workers", "1"]  # fmt: skip
    code, _, err = _cli([*args, "--shard", "auto"], capsys)
    assert code == 2 and err.startswith("error: --shard auto: JOB_COMPLETION_INDEX")
    code, _, err = _cli([*args, "--shard", "auto/3"], capsys)
    assert code == 0, err
    assert sorted(s["index"] for s in store.read_manifest(out)["shards"]) == [2, 3]
