"""Per-shard commit records: ``DATASET/.records/shard-NNNNN.json``, one small JSON file per
committed shard, written atomically (temporary name + ``os.replace``) right after the shard
file itself is renamed into place.

A record is the shard's manifest entry. Writing it needs no lock: every writer writes only its
own shards' records, and a rename within one directory is atomic on local file systems, NFS and
Lustre alike. The manifest's shard list is assembled from the records (``ident3d merge``,
:func:`ident3d.store.merge.merge_records`), and :func:`ident3d.store.read_manifest` overlays
the records it does not list yet, so readers, ``verify`` and ``--resume`` see a shard as
committed the moment its record exists, whether the manifest was updated or not. That is what
makes commits safe where ``fcntl`` locks are unreliable (several machines writing one dataset
directory on a shared file system): a lost manifest update is repaired by the next merge, and
never loses a shard.

:func:`deferred_merge` makes the commits of this process write records only (no manifest
update at all): how the jobs of ``ident3d render --jobs K`` commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ident3d.errors import DataError, UsageError
from ident3d.store.format import (
    _TMP_MARK,
    UnsafeDatasetError,
    _check_shard_entry,
    shard_range,
    write_json_atomic,
)

RECORDS_DIR = ".records"
_RECORD_RE = re.compile(r"^shard-(\d+)\.json$")

_MERGE_ON_COMMIT = [True]


@contextlib.contextmanager
def deferred_merge() -> Iterator[None]:
    """Within the block, :func:`ident3d.store.commit_shard` writes the shard and its record only
    and leaves ``manifest.json`` alone (a final :func:`~ident3d.store.merge.merge_records`
    lists them). Commits of shards the manifest already lists still update it."""
    _MERGE_ON_COMMIT.append(False)
    try:
        yield
    finally:
        _MERGE_ON_COMMIT.pop()


def merge_on_commit() -> bool:
    """Whether commits in this process also update ``manifest.json`` (the default)."""
    return _MERGE_ON_COMMIT[-1]


def record_name(entry_file: str) -> str:
    """``shard-00007.json`` for the shard file ``shard-00007.h5``."""
    return entry_file[: -len(".h5")] + ".json"


def records_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root) / RECORDS_DIR


def write_record(root: str | os.PathLike[str], entry: dict[str, Any]) -> Path:
    """Write ``entry`` as ``ROOT/.records/<shard>.json`` atomically (fsynced); return its path."""
    folder = records_dir(root)
    if folder.is_symlink():
        raise UnsafeDatasetError(f"{folder} is a symbolic link; records must stay in the dataset.")
    folder.mkdir(exist_ok=True)
    path = folder / record_name(str(entry["file"]))
    write_json_atomic(path, entry, sort_keys=True, sync_dir=True)
    return path


def record_indices(root: str | os.PathLike[str]) -> list[int]:
    """Shard indices that have a record (by name only; nothing is opened)."""
    folder = records_dir(root)
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(m[1]) for m in map(_RECORD_RE.match, names) if m)


def read_records(
    root: str | os.PathLike[str],
    manifest: dict[str, Any],
    skip: Iterable[int] = (),
    expect: Iterable[int] = (),
) -> dict[int, dict[str, Any]]:
    """The records of ``root`` checked against ``manifest``'s plan, by shard index.

    Records of indices in ``skip`` are not read. Indices in ``expect`` are looked up by name
    even when the folder listing does not show them (a shared file system may cache a
    directory listing for seconds; opening a name asks the server). A record that is not the
    format's own (wrong name for its index, a range other than the plan's, a symbolic link)
    raises :class:`UnsafeDatasetError` / :class:`DataError`: a dataset from elsewhere cannot
    make a reader leave its folder through a record.
    """
    root = Path(root)
    folder = records_dir(root)
    if folder.is_symlink():
        raise UnsafeDatasetError(f"{folder} is a symbolic link; records must stay in the dataset.")
    skip = set(skip)
    names: dict[int, str] = {}
    try:
        listing = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        listing = []
    for name in listing:
        m = _RECORD_RE.match(name)
        if m:
            names[int(m[1])] = name
    digits = manifest.get("shard_digits", 5)
    for k in expect:
        names.setdefault(int(k), f"shard-{int(k):0{digits}d}.json")
    out: dict[int, dict[str, Any]] = {}
    for k, name in sorted(names.items()):
        if k in skip:
            continue
        path = folder / name
        if path.is_symlink():
            raise UnsafeDatasetError(f"{path} is a symbolic link; records must be plain files.")
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            continue  # an expected name that is not there (yet)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path} is not a readable shard record: {exc}.") from None
        _check_shard_entry(root, manifest, entry)
        if entry["index"] != k or record_name(entry["file"]) != name:
            raise UnsafeDatasetError(f"{path} describes shard {entry['index']}, not shard {k}.")
        try:
            start, count = shard_range(manifest, k)
        except UsageError as exc:  # out of range for the plan
            raise DataError(f"{path}: {exc}") from None
        if (entry.get("start"), entry.get("count")) != (start, count):
            raise DataError(
                f"{path} says samples from {entry.get('start')} count {entry.get('count')}; "
                f"the plan says from {start} count {count}."
            )
        out[k] = entry
    return out


def remove_records(root: str | os.PathLike[str]) -> None:
    """Delete every record (and record temporary file) of ``root``: a new or overwritten
    dataset must not inherit an older one's records."""
    folder = records_dir(root)
    if folder.is_symlink():
        folder.unlink()
        return
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for e in entries:
        if (_RECORD_RE.match(e.name) or _TMP_MARK in e.name) and not e.is_dir():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)
    with contextlib.suppress(OSError):
        folder.rmdir()
