"""Where an export writes: :class:`ExportTarget` checks DST (refusing a non-empty one without
``overwrite``, and any folder holding files an export does not write), builds the export in a
hidden sibling ``.DST.partial-<pid>-<hex>`` and renames it to DST only when complete;
:func:`run_export_jobs` runs per-file jobs in spawned worker processes with a progress bar.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from ident3d.errors import DataError, UsageError
from ident3d.store.convert import _worker_pool
from ident3d.store.export import _remove_stale_partials
from ident3d.store.format import _is_enospc


class ExportTarget:
    """``with ExportTarget(dst, overwrite, names) as tmp:`` write everything into ``tmp``;
    leaving the block without an exception replaces DST by it, with one the partial folder is
    deleted (a full disk becomes one :class:`DataError` line). ``names`` matches the top-level
    entries an export of this kind writes: with ``overwrite``, a DST holding anything else is
    refused, so a folder that is not an export is never deleted."""

    def __init__(self, dst: str | os.PathLike[str], overwrite: bool, names: re.Pattern[str]):
        self.dst = Path(dst)
        self.tmp: Path | None = None
        if self.dst.exists():
            if not self.dst.is_dir():
                raise UsageError(f"{self.dst} exists and is not a directory.")
            entries = [e.name for e in os.scandir(self.dst)]
            if entries:
                if not overwrite:
                    raise UsageError(
                        f"{self.dst} is not empty (it may hold a dataset); pass --overwrite to "
                        "replace it."
                    )
                foreign = [e for e in entries if not names.match(e)]
                if foreign:
                    raise UsageError(
                        f"{self.dst} holds {foreign[0]!r}, which this export does not write; "
                        "refusing to replace a folder that is not an exported dataset."
                    )

    def __enter__(self) -> Path:
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(self.dst)
        self.tmp = (
            self.dst.parent / f".{self.dst.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        )
        self.tmp.mkdir()
        return self.tmp

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.tmp is not None
        full = f"disk full while exporting to {self.dst}; nothing was kept."
        if exc is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError) and _is_enospc(exc):
                raise DataError(full) from None
            return  # the exception propagates
        try:
            if self.dst.exists():
                shutil.rmtree(self.dst)
            os.replace(self.tmp, self.dst)
        except BaseException as err:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(err, OSError) and _is_enospc(err):
                raise DataError(full) from None
            raise


def plan_export(
    root: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    overwrite: bool,
    names: Any,
    workers: int | None,
    shard_size: int | None,
) -> tuple[Any, int, int, int, ExportTarget]:
    """What every sharded export checks before it writes: the dataset (every shard opened),
    the worker count, the samples per output file (default the store's shard size), their
    number and the checked :class:`ExportTarget`."""
    from ident3d.store.reader import open_dataset

    ds = open_dataset(root)
    ds.raw_latents()  # every shard opens (checked) before anything is written
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}.")
    size = int(shard_size or ds.shard_size)
    if size < 1:
        raise UsageError(f"--shard-size must be at least 1, got {size}.")
    target = ExportTarget(dst, overwrite, names)
    return ds, workers, size, -(-ds.n // size), target


def run_export_jobs(
    jobs: Sequence[Any],
    task: Callable[[Any], int],
    init: Callable[..., None],
    initargs: tuple[Any, ...],
    workers: int,
    total: int,
    progress: bool,
) -> None:
    """Run ``task(job)`` for every job (each returns the samples it wrote): in ``workers``
    spawned processes set up by ``init(*initargs)`` when there are several, else here."""
    from tqdm import tqdm

    pool = None
    try:
        if workers > 1 and len(jobs) > 1:
            pool = _worker_pool(min(workers, len(jobs)), init, initargs)
            results: Iterator[int] = pool.imap_unordered(task, jobs, chunksize=1)
        else:
            init(*initargs)
            results = map(task, jobs)
        with tqdm(total=total, unit="sample", desc="export", disable=not progress) as bar:
            for done in results:
                bar.update(done)
    except BaseException:
        if pool is not None:
            pool.terminate()
            pool.join()
            pool = None
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
