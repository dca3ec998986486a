"""``--shard auto``: which shard group this job renders, read from the scheduler's environment.

- Kubernetes Indexed Job: ``JOB_COMPLETION_INDEX`` (0 .. completions - 1). Kubernetes does not
  put the number of completions into the environment, so give it: ``--shard auto/N``.
- SLURM job array: ``SLURM_ARRAY_TASK_ID``; with plain ``--shard auto`` the group count is
  the array's size, accepted only for a full array ``0..N-1`` with step 1 (``SLURM_ARRAY_TASK_MIN``
  0, ``SLURM_ARRAY_TASK_MAX`` N-1, ``SLURM_ARRAY_TASK_COUNT`` N). A partial array (re-running
  failed tasks with ``--array=3,7``) needs ``--shard auto/N``: the size of a partial array is
  not the number of groups.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ident3d.errors import UsageError
from ident3d.render.seeds import parse_shard

INDEX_VARIABLES = ("JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")


def _int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--shard auto: {name}={value!r} is not an integer.") from None


def resolve_shard(
    spec: str | None, environ: Mapping[str, str] | None = None
) -> tuple[int, int] | None:
    """``--shard`` value -> ``(I, N)``: ``I/N`` as given; ``auto`` / ``auto/N`` from the
    environment (module docstring); ``None`` stays ``None``."""
    if spec is None or not spec.strip().lower().startswith("auto"):
        return parse_shard(spec)
    env = os.environ if environ is None else environ
    rest = spec.strip()[4:]
    count: int | None = None
    if rest:
        if not rest.startswith("/"):
            raise UsageError(f"--shard must look like I/N, auto or auto/N, got {spec!r}.")
        try:
            count = int(rest[1:])
        except ValueError:
            raise UsageError(f"--shard {spec}: N must be an integer.") from None
        if count < 1:
            raise UsageError(f"--shard {spec}: N must be at least 1.")
    source = next((v for v in INDEX_VARIABLES if _int(env, v) is not None), None)
    if source is None:
        raise UsageError(
            "--shard auto needs JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) or "
            "SLURM_ARRAY_TASK_ID (a SLURM job array) in the environment; neither is set."
        )
    index = _int(env, source)
    assert index is not None
    if count is None:
        if source != "SLURM_ARRAY_TASK_ID":
            raise UsageError(
                f"--shard auto: {source} gives the index but not the number of groups; "
                "pass --shard auto/N with N the Job's completions."
            )
        lo, hi, size = (_int(env, f"SLURM_ARRAY_TASK_{k}") for k in ("MIN", "MAX", "COUNT"))
        if lo != 0 or hi is None or size != hi + 1:
            raise UsageError(
                f"--shard auto: the SLURM array is not a full 0..N-1 range (min {lo}, max {hi}, "
                f"count {size}); pass --shard auto/N with N the number of groups."
            )
        count = size
    if not 0 <= index < count:
        raise UsageError(f"--shard auto: {source}={index} is outside 0..{count - 1}.")
    return index, count
