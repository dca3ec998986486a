"""Training data checked before a run trusts it: every shard's SHA-256 against the manifest.

The torch datasets read images straight from the shards and do not hash them (that would
cost more than the read itself), so flipped bytes would otherwise train silently. ``ident3d
train`` therefore verifies the datasets it will read (``data.path`` and ``data.eval_path``,
when they are ident3d stores) once, in one process, before anything is written; on
``--resume`` the run's own ``config.json`` names them. ``--no-verify-data`` skips it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ident3d.errors import DataError

#: Datasets larger than this get a line saying they are being verified (it takes a while).
ANNOUNCE_BYTES = 1 << 30


def _dataset_paths(config: dict[str, Any], out: str | os.PathLike[str], resume: bool) -> list[str]:
    if resume:  # the run's own config; an unreadable one is train's error to report
        try:
            config = json.loads((Path(out) / "config.json").read_text())
        except (OSError, ValueError):
            return []
    d = config.get("data") if isinstance(config, dict) else None
    if not isinstance(d, dict) or d.get("kind") != "dataset":
        return []
    paths = [d.get("path"), d.get("eval_path")]
    return list(dict.fromkeys(str(p) for p in paths if isinstance(p, str) and p))


def verify_training_data(
    config: dict[str, Any],
    out: str | os.PathLike[str],
    resume: bool = False,
    echo: Callable[[str], Any] | None = None,
) -> None:
    """Verify (full SHA-256 check, :func:`ident3d.store.verify_dataset`) each ident3d store a
    run will read; raise a one-line :class:`DataError` naming the first problem. Only rank 0
    of a distributed launch checks (the others read the same files). Paths that are not
    stores (original folders, missing paths) are left to the run's own checks."""
    if os.environ.get("RANK", "0") != "0":
        return
    from ident3d.data import detect_layout
    from ident3d.store import open_dataset, verify_dataset

    for path in _dataset_paths(config, out, resume):
        try:
            if not Path(path).exists() or detect_layout(path) != "store":
                continue
            total = sum(s.bytes for s in open_dataset(path, allow_incomplete=True).shards())
        except Exception:  # not readable as a store: the run's own checks name the problem
            continue
        if echo is not None and total >= ANNOUNCE_BYTES:
            echo(f"verifying {path} ({total / 2**30:.1f} GiB of shards; --no-verify-data skips)")
        report = verify_dataset(path)
        if report.problems:
            name, what = report.problems[0]
            first = f"{name}: {what}"
            more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
            raise DataError(
                f"dataset {path} failed verification: {first}{more}; run `ident3d verify "
                f"{path}`, or pass --no-verify-data to train on it anyway"
            )
