"""The manifest: ``manifest.json`` read and written under a file lock, dataset creation
(:func:`create_dataset`), shard commits (:func:`commit_shard`) and completeness checks.

Commits do not depend on the lock being reliable: each commit first writes the shard's record
(:mod:`ident3d.store.records`), which :func:`read_manifest` overlays, so a manifest update lost
to a lock that does not work (NFS without a lock daemon, Lustre mounted without ``flock``) hides
nothing; ``ident3d merge`` (:mod:`ident3d.store.merge`) writes the records back into the file.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.store.format import (
    _SHARD_RE,
    DEFAULT_COMPRESSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    KINDS,
    LOCK_NAME,
    MANIFEST_NAME,
    SCENE_DIM,
    _check_shard_entry,
    _compression_kwargs,
    _fsync_path,
    _normalise_json,
    _versions,
    remove_stale_temp_files,
    shard_digits,
    shard_range,
    write_json_atomic,
)
from ident3d.store.records import merge_on_commit, read_records, remove_records, write_record

#: lockf errors that mean "locks do not work here" (not "someone holds it"): commits then go
#: ahead without the lock, which the records make safe.
_NO_LOCK_ERRNOS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@contextlib.contextmanager
def manifest_lock(root: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive ``fcntl.lockf`` lock on ``ROOT/.manifest.lock`` (POSIX record lock, which
    also works across machines on NFS with a lock daemon)."""
    path = Path(root) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as exc:  # no lock daemon (NFS) or no lock support: go on unlocked
            if exc.errno not in _NO_LOCK_ERRNOS:
                raise
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_manifest(root: str | os.PathLike[str], records: bool = True) -> dict[str, Any]:
    """Load ``ROOT/manifest.json``; :class:`DataError` if absent, unreadable or not ours.

    With ``records`` (the default), shards that have a commit record but are not yet listed
    in the file (see :mod:`ident3d.store.records`) are added to the returned ``shards``, so
    every reader sees a shard as committed once its record exists; ``records=False`` returns
    the file as it is."""
    root = Path(root)
    path = root / MANIFEST_NAME
    if not root.exists():
        raise DataError(f"{root} does not exist.")
    if not path.is_file():
        raise DataError(f"{root} is not an ident3d dataset: it has no {MANIFEST_NAME}.")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a readable manifest: {exc}.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DataError(f"{path} is not an ident3d dataset manifest.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(
            f"{path} has format version {version!r}; this ident3d reads up to {FORMAT_VERSION}."
        )
    for key in ("kind", "n", "shard_size", "num_shards", "height", "width", "raw_dim", "shards"):
        if key not in manifest:
            raise DataError(f"{path} lacks the key {key!r}.")
    if not isinstance(manifest["shards"], list):
        raise DataError(f"{path} has a 'shards' value that is not a list.")
    for entry in manifest["shards"]:  # a dataset from elsewhere must not lead out of its folder
        _check_shard_entry(root, manifest, entry)
    if records:
        listed = set()
        for entry in manifest["shards"]:
            with contextlib.suppress(TypeError, ValueError):
                listed.add(int(entry["index"]))
        extra = read_records(root, manifest, skip=listed)
        if extra:
            shards = list(manifest["shards"]) + list(extra.values())
            shards.sort(key=lambda s: int(s["index"]))
            manifest["shards"] = shards
    return manifest


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    write_json_atomic(root / MANIFEST_NAME, manifest)


_PLAN_KEYS = (
    "format_version",
    "kind",
    "n",
    "shard_size",
    "num_shards",
    "shard_digits",
    "height",
    "width",
    "raw_dim",
    "scene_dim",
    "has_class",
    "class_names",
    "compression",
    "config",
    "factor_table",
    "pair_structure",
    "scm",
)


def _same_plan_value(key: str, old: Any, new: Any) -> bool:
    """Whether an existing manifest's ``key`` plans the same dataset as ``new``. A factor table
    written before factors had types (ident3d without SCMs) equals today's when every factor
    of today's is continuous (today's class row, which such tables did not have, aside), so
    such a dataset can still be resumed or extended."""
    if old == new:
        return True
    if key != "factor_table" or not isinstance(old, list) or not isinstance(new, list):
        return False
    if any(isinstance(r, dict) and "type" in r for r in old):
        return False
    if not any(isinstance(r, dict) and r.get("column") == "class" for r in old):
        new = [r for r in new if not (isinstance(r, dict) and r.get("column") == "class")]
    if not all(isinstance(r, dict) and r.get("type") == "continuous" for r in new):
        return False
    return old == [{k: v for k, v in r.items() if k != "type"} for r in new]


def _remove_store_files(root: Path) -> None:
    """Delete the manifest, shard files and the temporary files of writers that are gone (their
    pid is not alive on this host) of a dataset; never other files, never a live writer's."""
    for entry in os.scandir(root):
        name = entry.name
        if _SHARD_RE.match(name) or name == MANIFEST_NAME:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    remove_records(root)
    remove_stale_temp_files(root)


def create_dataset(
    root: str | os.PathLike[str],
    kind: str,
    n: int,
    shard_size: int,
    height: int,
    width: int,
    raw_dim: int,
    config: dict[str, Any],
    factor_table: Sequence[dict[str, Any]] | None = None,
    compression: str = DEFAULT_COMPRESSION,
    overwrite: bool = False,
    has_class: bool = False,
    class_names: Sequence[str] | None = None,
    blender_version: str | None = None,
    pair_structure: Sequence[dict[str, Any]] | None = None,
    scm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create (or re-open for resume) a dataset directory and its manifest; return the manifest.

    An existing manifest with the same plan (kind, n, shard size, shapes, compression, classes),
    config and factor table is reused as it is, with its committed shards: that is how a crashed
    run resumes and how several machines join one dataset. A different one raises
    :class:`UsageError`. ``overwrite`` deletes the old manifest and shards (same plan or not)
    and the temporary files of writers that are gone, and starts a new manifest.
    """
    root = Path(root)
    if kind not in KINDS:
        raise UsageError(f"unknown dataset kind {kind!r}; choose images or pairs.")
    for name, value in (("n", n), ("shard_size", shard_size), ("height", height)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}.")
    for name, value in (("width", width), ("raw_dim", raw_dim)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise UsageError(f"{name} must be a positive integer, got {value!r}.")
    _compression_kwargs(compression)  # validates the name
    if class_names is not None and not has_class:
        raise UsageError("class_names given for a dataset without classes (has_class=False).")
    n, shard_size, height, width, raw_dim = map(int, (n, shard_size, height, width, raw_dim))
    num_shards = math.ceil(n / shard_size)
    plan = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "n": n,
        "shard_size": shard_size,
        "num_shards": num_shards,
        "shard_digits": shard_digits(num_shards),
        "height": height,
        "width": width,
        "raw_dim": raw_dim,
        "scene_dim": SCENE_DIM,
        "has_class": bool(has_class),
        "class_names": list(class_names) if class_names is not None else None,
        "compression": compression,
        "config": _normalise_json(config, "config"),
        "factor_table": _normalise_json(
            list(factor_table) if factor_table is not None else None, "factor_table"
        ),
        "pair_structure": _normalise_json(
            list(pair_structure) if pair_structure is not None else None, "pair_structure"
        ),
        "scm": _normalise_json(scm, "scm"),
    }
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a directory.")
    root.mkdir(parents=True, exist_ok=True)
    with manifest_lock(root):
        if (root / MANIFEST_NAME).exists():
            try:
                old = read_manifest(root, records=False)
            except DataError:
                if not overwrite:
                    raise
                old = None
            if old is not None:
                differ = [k for k in _PLAN_KEYS if not _same_plan_value(k, old.get(k), plan[k])]
                if not differ and not overwrite:
                    return read_manifest(root)
                if not overwrite:
                    raise UsageError(
                        f"{root} already holds a dataset with a different "
                        f"{', '.join(differ)}; pass overwrite (--overwrite) to replace it."
                    )
            _remove_store_files(root)
        else:  # a new dataset never inherits the records of an older one
            if overwrite:
                _remove_store_files(root)
            remove_records(root)
        manifest = {
            "format": FORMAT_NAME,
            **plan,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "versions": _versions(blender_version),
            "shards": [],
        }
        _write_manifest(root, manifest)
    return manifest


def commit_shard(
    root: str | os.PathLike[str],
    entry: dict[str, Any],
    tmp_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Commit a complete shard; return the manifest as the file held it plus this entry
    (other writers' unmerged records are not read: that would cost a read per record and
    commit).

    With ``tmp_path``, the finished temporary file is first renamed to ``entry["file"]``.
    Then the shard's record is written atomically (:func:`ident3d.store.records.write_record`):
    from that moment the shard counts, for every reader. Last, the entry is written into
    ``manifest.json`` under the manifest lock (an earlier entry of the same index is
    replaced), unless :func:`ident3d.store.records.deferred_merge` is active and the manifest
    does not list the index yet: then no lock is taken at all and a later merge lists it.

    The lock keeps two writers of one machine from losing each other's manifest updates; where
    it does not work, a lost update only delays the listing to the next merge (the record
    stays). Two writers racing on one shard index are kept apart by the render's own lock;
    verify's checksums catch a record describing another file.
    """
    root = Path(root)
    merge = merge_on_commit()
    lock = manifest_lock(root) if merge else contextlib.nullcontext()
    with lock:
        manifest = read_manifest(root, records=False)
        index = int(entry["index"])
        start, count = shard_range(manifest, index)
        if (int(entry["start"]), int(entry["count"])) != (start, count):
            raise UsageError(
                f"shard {index} must hold samples {start}..{start + count - 1}, "
                f"not {entry['start']}..{int(entry['start']) + int(entry['count']) - 1}."
            )
        _check_shard_entry(root, manifest, entry)
        final = root / entry["file"]
        if tmp_path is not None:
            os.replace(tmp_path, final)
            _fsync_path(root, directory=True)
        elif not final.is_file():
            raise DataError(f"cannot commit shard {index}: {final} does not exist.")
        try:
            write_record(root, dict(entry))
        except BaseException:
            if tmp_path is not None:  # renamed but not recorded: it must not look complete
                with contextlib.suppress(FileNotFoundError):
                    final.unlink()
            raise
        listed = any(int(s["index"]) == index for s in manifest["shards"])
        if merge or listed:
            if not merge:  # re-commit of a listed shard: its entry must not go stale
                with manifest_lock(root):
                    _replace_entry(root, entry)
            else:
                _replace_entry(root, entry)
    shards = [s for s in manifest["shards"] if int(s["index"]) != index] + [dict(entry)]
    manifest["shards"] = sorted(shards, key=lambda s: int(s["index"]))
    return manifest


def _replace_entry(root: Path, entry: dict[str, Any]) -> None:
    """Put ``entry`` into ``manifest.json`` (caller holds the lock, where locks work)."""
    manifest = read_manifest(root, records=False)
    index = int(entry["index"])
    shards = [s for s in manifest["shards"] if int(s["index"]) != index]
    shards.append(dict(entry))
    shards.sort(key=lambda s: int(s["index"]))
    manifest["shards"] = shards
    _write_manifest(root, manifest)


def missing_shards(root: str | os.PathLike[str]) -> list[int]:
    """Indices of planned shards not yet committed (in order). Empty when complete."""
    manifest = read_manifest(root)
    done = {int(s["index"]) for s in manifest["shards"]}
    return [k for k in range(manifest["num_shards"]) if k not in done]


def is_complete(manifest: dict[str, Any]) -> bool:
    """Whether every planned shard is listed."""
    return len({int(s["index"]) for s in manifest["shards"]}) == manifest["num_shards"]
