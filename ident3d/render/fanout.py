"""Fan-out: ``ident3d render --jobs K --executor slurm|local``, one dataset rendered by K jobs.

The driver (the process that runs the command) plans and creates the dataset, submits one job
array of K tasks through submitit (``AutoExecutor``: a SLURM job array, or K local processes
with ``--executor local``), waits with a progress bar over all jobs, re-submits the tasks that
failed or were pre-empted (up to ``retries`` times each), and ends by merging the jobs' shard
records into the manifest and verifying the dataset (checksums included).

Task ``g`` renders ``--shard g/K`` of the dataset through :func:`render_dataset`, with resume
on (the shards already committed are skipped) and commits deferred
(:func:`ident3d.store.deferred_merge`: shard file + record, no manifest update, no lock), so the
dataset is the same, bit for bit, as a single-process render: latents and pixels depend on the
seed and the sample index only.

Re-running the same command after an interruption (the driver killed, a job killed, the
allocation ended) submits only the groups that still miss shards; jobs of an earlier driver that
are still pending or running (recorded in ``LOG_DIR/fanout.json``) are waited for, not
submitted again. ``--no-wait`` returns after submitting and says how to follow the jobs and how to
finish.

What is pickled: submitit pickles the task (this module's :class:`FanoutTask`: the render job
of the user's own command) into the log folder, and each job's small result dict back.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ident3d import store
from ident3d.errors import UsageError
from ident3d.render.dataset import check_out_dir, check_size, prepare_dataset, render_dataset
from ident3d.render.job import RenderJob, check_objects, check_resolution, require_bpy
from ident3d.render.seeds import select_shards
from ident3d.store.format import remove_stale_temp_files

EXECUTORS = ("local", "slurm")
STATE_NAME = "fanout.json"
#: Local jobs run until done (submitit's local default would kill them after 2 minutes).
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
#: SLURM states of a job that may still write shards.
_LIVE_STATES = {
    "PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
    "REQUEUE_HOLD", "REQUEUE_FED", "STAGE_OUT", "SIGNALING", "UNKNOWN",
}  # fmt: skip


class FanoutFailed(UsageError):
    """Some groups could not be rendered (their retries are used up, or they failed with an
    error that a retry cannot fix). Committed shards are kept; re-running the command renders
    the rest. Exit status 1."""

    exit_code = 1


@dataclass
class SlurmOptions:
    """What each SLURM task asks for (``--slurm-*`` options); None: the cluster's default."""

    partition: str | None = None
    time: str | None = None  # minutes, or [D-]HH:MM[:SS]
    cpus: int | None = None
    gpus: int | None = None
    mem: str | None = None  # sbatch --mem: 16G, 4000M ...
    array_parallelism: int | None = None
    account: str | None = None


def parse_time_minutes(value: str | None) -> int | None:
    """A SLURM time limit -> whole minutes (rounded up). SLURM's forms: ``M``, ``M:S``,
    ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        days = 0
        if "-" in text:
            d, text = text.split("-", 1)
            days = int(d)
        parts = [int(p) for p in text.split(":")]
        if any(p < 0 for p in parts) or days < 0 or not 1 <= len(parts) <= 3:
            raise ValueError
        if days:
            h, m, sec = ([*parts, 0, 0])[:3]
        elif len(parts) == 3:
            h, m, sec = parts
        else:
            h, (m, sec) = 0, ([*parts, 0])[:2]
    except ValueError:
        raise UsageError(
            f"--slurm-time {value!r}: give a SLURM time limit (minutes, M:S, H:M:S or "
            "D-H[:M[:S]], e.g. 90, 1:30:00, 2-00:00:00)."
        ) from None
    total = math.ceil(days * 24 * 60 + h * 60 + m + sec / 60)
    if total < 1:
        raise UsageError(f"--slurm-time {value!r} must be at least one minute.")
    return total


def executor_parameters(kind: str, slurm: SlurmOptions, jobs: int) -> dict[str, Any]:
    """The ``AutoExecutor.update_parameters`` of a fan-out (tested against submitit's mocks)."""
    if kind == "local":
        return {"timeout_min": parse_time_minutes(slurm.time) or LOCAL_TIMEOUT_MIN,
                "name": "ident3d-render"}  # fmt: skip
    params: dict[str, Any] = {"name": "ident3d-render", "tasks_per_node": 1, "nodes": 1}
    minutes = parse_time_minutes(slurm.time)
    if minutes is not None:
        params["timeout_min"] = minutes
    if slurm.cpus is not None:
        params["cpus_per_task"] = int(slurm.cpus)
    if slurm.gpus is not None:
        params["gpus_per_node"] = int(slurm.gpus)
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    if slurm.account:
        params["slurm_account"] = slurm.account
    if slurm.mem:
        params["slurm_mem"] = slurm.mem
    params["slurm_array_parallelism"] = int(slurm.array_parallelism or jobs)
    return params


def make_executor(kind: str, folder: Path, slurm: SlurmOptions, jobs: int) -> Any:
    """A submitit ``AutoExecutor`` for ``kind`` (``local`` or ``slurm``), parameters set."""
    if kind not in EXECUTORS:
        raise UsageError(f"--executor {kind!r}: choose one of {', '.join(EXECUTORS)}.")
    try:
        import submitit
    except ImportError:  # pragma: no cover - a dependency
        raise UsageError("--jobs needs submitit: pip install submitit.") from None
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=folder, cluster=kind)
    executor.update_parameters(**executor_parameters(kind, slurm, jobs))
    return executor


@dataclass
class FanoutTask:
    """What one job of the array runs: ``--shard group/groups`` of the dataset, resumed, with
    commits deferred to the driver's merge. Picklable; submitit calls it with the group."""

    job: RenderJob
    out: str
    groups: int
    workers: int
    threads: int | None
    compression: str
    shard_size: int

    def __call__(self, group: int) -> dict[str, Any]:
        from ident3d.render.workers import RenderInterrupted

        t0 = time.perf_counter()
        try:
            with store.deferred_merge():
                summary = render_dataset(
                    self.job, self.out, workers=self.workers, threads=self.threads,
                    shard=(group, self.groups), resume=True, compression=self.compression,
                    shard_size=self.shard_size, progress=False,
                )  # fmt: skip
        except RenderInterrupted:
            raise  # a pre-emption or time limit: submitit requeues (checkpoint) or we retry
        except UsageError as exc:  # bad input a retry cannot fix: reported, not retried
            return {"group": group, "error": str(exc), "host": socket.gethostname()}
        return {
            "group": group,
            "shards": summary.shards,
            "skipped": summary.skipped_shards,
            "images": summary.images,
            "seconds": time.perf_counter() - t0,
            "host": socket.gethostname(),
        }

    def checkpoint(self, group: int) -> Any:
        """submitit's pre-emption / time-limit hook: requeue the same task (it resumes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, group)


@dataclass
class FanoutSummary:
    """What a fan-out did."""

    out: Path
    groups: int
    submitted: list[int]
    images: int
    seconds: float
    retried: dict[int, int] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)
    complete: bool = False
    waited: bool = True
    verify_lines: list[str] = field(default_factory=list)

    def line(self) -> str:
        if not self.waited:
            return f"submitted {len(self.submitted)} job(s) for {self.out}"
        retries = sum(self.retried.values())
        rate = self.images / self.seconds if self.seconds > 0 else float("nan")
        return (
            f"rendered {self.images} images with {len(self.submitted)} job(s) of {self.groups} "
            f"in {self.seconds:.1f} s ({rate:.2f} images/s), {retries} re-submission(s) -> "
            f"{self.out} [{'dataset complete, verified' if self.complete else 'incomplete'}]"
        )


def _group_shards(num_shards: int, groups: int) -> list[list[int]]:
    return [select_shards(num_shards, (g, groups)) for g in range(groups)]


def _committed(out: Path) -> set[int]:
    return {int(s["index"]) for s in store.read_manifest(out)["shards"]}


def _job_alive(kind: str, job: Any) -> bool:
    if kind == "local":
        from ident3d.store.format import pid_alive

        try:
            return pid_alive(int(str(job.job_id).split("_")[0]))
        except ValueError:
            return False
    try:
        return str(job.state).split()[0].upper() in _LIVE_STATES
    except Exception:  # sacct unreachable: assume it may still run
        return True


def _job_done(kind: str, job: Any) -> bool:
    """Whether a job has ended. A local job of an earlier driver has no process handle here
    (submitit would call it done at once): it has ended when its controller's PID is gone."""
    if kind == "local" and getattr(job, "_process", None) is None:
        return not _job_alive(kind, job)
    return bool(job.done())


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=1) + "\n")
    os.replace(tmp, path)


def _job_of(kind: str, folder: Path, job_id: str) -> Any:
    import submitit

    cls = submitit.SlurmJob if kind == "slurm" else submitit.LocalJob
    return cls(folder=folder, job_id=job_id)


def _outcome(job: Any) -> tuple[dict[str, Any] | None, str | None]:
    """``(result, None)`` for a job that returned, ``(None, reason)`` for one that did not."""
    try:
        result = job.result()
    except Exception as exc:  # killed, pre-empted past its requeues, crashed
        text = str(exc).strip().splitlines()
        return None, (text[-1] if text else type(exc).__name__)[:300]
    return (result if isinstance(result, dict) else {}), None


def follow_hint(kind: str, folder: Path, out: Path, job_ids: Sequence[str]) -> list[str]:
    """The lines ``--no-wait`` prints: how to follow the jobs, how to finish."""
    lines = []
    if kind == "slurm":
        arrays = sorted({j.split("_")[0] for j in job_ids})
        lines.append(f"follow: squeue -j {','.join(arrays)}   (logs: {folder}/<job id>_log.out)")
    else:
        lines.append(f"follow: logs in {folder}/ (<pid>_0_log.out, <pid>_0_log.err)")
    lines.append(
        "finish: re-run this same command (it waits for these jobs, re-submits failed groups, "
        f"merges and verifies), or once every job has ended: ident3d merge {out}"
    )
    return lines


def render_fanout(
    job: RenderJob,
    out: str | os.PathLike[str],
    *,
    jobs: int,
    executor: str = "local",
    slurm: SlurmOptions | None = None,
    retries: int = 2,
    wait: bool = True,
    workers: int = 1,
    threads: int | None = None,
    overwrite: bool = False,
    compression: str = store.DEFAULT_COMPRESSION,
    shard_size: int = store.DEFAULT_SHARD_SIZE,
    log_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    poll: float = 1.0,
    echo: Callable[[str], None] = print,
    make: Callable[[str, Path, SlurmOptions, int], Any] = make_executor,
) -> FanoutSummary:
    """Render ``job`` into ``out`` with ``jobs`` submitit jobs (module docstring).

    ``make`` builds the executor (tests pass one that records what is submitted)."""
    t0 = time.perf_counter()
    out = Path(out)
    slurm = slurm or SlurmOptions()
    if jobs < 1:
        raise UsageError("--jobs must be at least 1.")
    if retries < 0:
        raise UsageError("--retries must be 0 or more.")
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}.")
    if job.renderer == "blender":
        require_bpy()
    job.shard_size = int(shard_size)
    job.resolution = check_resolution(job.resolution)
    job.objects = check_objects(job.objects)
    executor_parameters(executor, slurm, jobs)  # bad --slurm-time: one line, nothing written
    check_out_dir(out)
    check_size(job, out, None, compression)
    folder = Path(log_dir) if log_dir is not None else out.parent / f"{out.name}.jobs"
    manifest = prepare_dataset(job, out, compression, overwrite, resume=True)
    num = int(manifest["num_shards"])
    groups = min(jobs, num)
    if groups < jobs:
        echo(f"note: {num} shard(s) make {groups} group(s); submitting at most {groups} job(s)")
    plan = _group_shards(num, groups)
    state_path = folder / STATE_NAME
    folder.mkdir(parents=True, exist_ok=True)
    state = _load_state(state_path)
    if state.get("out") != str(out.resolve()) or state.get("groups") != groups or overwrite:
        state = {"out": str(out.resolve()), "groups": groups, "executor": executor, "jobs": {}}
    # jobs of an earlier driver that may still be writing: wait for them, do not duplicate
    live: dict[int, Any] = {}
    if state.get("executor") == executor:
        for g_text, job_id in state.get("jobs", {}).items():
            j = _job_of(executor, folder, job_id)
            if _job_alive(executor, j):
                live[int(g_text)] = j
    done = _committed(out)
    todo = [g for g in range(groups) if any(k not in done for k in plan[g]) and g not in live]
    total = sum(store.shard_range(manifest, k)[1] for g in range(groups) for k in plan[g]
                if k not in done)  # fmt: skip
    ex = None
    active: dict[int, Any] = dict(live)
    if live:
        echo(f"waiting for {len(live)} job(s) of an earlier run: groups {sorted(live)}")
    if todo:
        ex = make(executor, folder, slurm, groups)
        task = FanoutTask(job, str(out), groups, workers, threads, compression, int(shard_size))
        submitted = ex.map_array(task, todo)
        for g, j in zip(todo, submitted, strict=True):
            active[g] = j
        state["jobs"].update({str(g): str(j.job_id) for g, j in zip(todo, submitted, strict=True)})
        _save_state(state_path, state)
        ids = [str(j.job_id) for j in submitted]
        echo(
            f"submitted {len(todo)} job(s) ({executor}) for groups {_ranges(todo)} of {groups}: "
            f"{_ranges_text(ids)}"
        )
    summary = FanoutSummary(out=out, groups=groups, submitted=todo, images=0, seconds=0.0,
                            job_ids=[str(j.job_id) for j in active.values()])  # fmt: skip
    if not wait:
        for line in follow_hint(executor, folder, out, summary.job_ids):
            echo(line)
        summary.waited = False
        summary.seconds = time.perf_counter() - t0
        return summary
    attempts = {g: 0 for g in active}
    errors: dict[int, str] = {}
    reported: list[int] = []
    bar = _progress_bar(total * job.views, progress and total > 0)
    shown = 0
    try:
        while active:
            time.sleep(poll)
            now = _committed(out)
            new = sum(store.shard_range(manifest, k)[1] for k in now - done) * job.views
            if bar is not None:
                bar.set_postfix_str(f"jobs running {len(active)}", refresh=False)
                if new > shown:
                    bar.update(new - shown)
                    shown = new
            for g, j in list(active.items()):
                if not _job_done(executor, j):
                    continue
                del active[g]
                result, reason = _outcome(j)
                if result is not None and "error" in result:
                    errors[g] = str(result["error"])
                    continue
                if result is not None:
                    summary.images += int(result.get("images", 0))
                    reported.extend(int(k) for k in result.get("shards", []))
                missing = [k for k in plan[g] if k not in _committed(out)]
                if not missing:
                    continue
                why = reason or f"ended with {len(missing)} shard(s) not committed"
                if attempts.get(g, 0) >= retries:
                    errors[g] = f"{why} (after {attempts.get(g, 0)} re-submission(s))"
                    continue
                attempts[g] = attempts.get(g, 0) + 1
                if ex is None:
                    ex = make(executor, folder, slurm, groups)
                task = FanoutTask(job, str(out), groups, workers, threads, compression,
                                  int(shard_size))  # fmt: skip
                (nj,) = ex.map_array(task, [g])
                active[g] = nj
                state["jobs"][str(g)] = str(nj.job_id)
                _save_state(state_path, state)
                echo(f"group {g} (job {j.job_id}): {why}; re-submitted as job {nj.job_id} "
                     f"(attempt {attempts[g] + 1} of {retries + 1})")  # fmt: skip
    finally:
        if bar is not None:
            bar.close()
    summary.retried = {g: a for g, a in attempts.items() if a}
    result = store.merge_records(out, expect=reported)
    summary.complete = result.complete
    if result.complete:
        remove_stale_temp_files(out)  # (of this host's dead writers: the jobs that were killed)
        report = store.verify_dataset(out)
        summary.verify_lines = report.lines()
        summary.complete = report.ok
        if not report.ok:
            raise FanoutFailed(f"the merged dataset {out} fails verify: {report.lines()[0]}")
    summary.seconds = time.perf_counter() - t0
    if errors:
        g, text = sorted(errors.items())[0]
        raise FanoutFailed(
            f"{len(errors)} of {groups} group(s) failed (group {g}: {text}); the committed "
            f"shards of {out} are kept ({result.listed} of {result.planned}): fix the cause "
            f"and re-run the same command to render the rest; logs in {folder}."
        )
    if not result.complete:
        raise FanoutFailed(
            f"{out} is still incomplete ({result.listed} of {result.planned} shards) although "
            f"every job ended; re-run the same command; logs in {folder}."
        )
    return summary


def _ranges(values: Sequence[int]) -> str:
    parts, vals = [], sorted(values)
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        parts.append(str(vals[i]) if i == j else f"{vals[i]}-{vals[j]}")
        i = j + 1
    return ",".join(parts)


def _ranges_text(ids: Sequence[str]) -> str:
    if len(ids) <= 4:
        return "job(s) " + ", ".join(ids)
    return f"jobs {ids[0]} ... {ids[-1]}"


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", dynamic_ncols=True, smoothing=0.1, file=sys.stderr)
