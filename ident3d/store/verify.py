"""Verification of a dataset on disk: :func:`verify_dataset` -> :class:`VerifyReport`
(checksums, shapes, values, manifest consistency).
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.store.format import (
    _SHARD_RE,
    _TMP_MARK,
    HDF5_SIGNATURE,
    MANIFEST_NAME,
    MIN_SHARD_DIGITS,
    SCENE_DIM,
    UnsafeDatasetError,
    _check_shard_file,
    _h5py,
    _image_shape,
    _latent_shape,
    sha256_file,
    shard_file_name,
    shard_range,
    stale_temp_files,
)
from ident3d.store.manifest import read_manifest


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` found. ``ok`` when nothing is wrong and nothing missing."""

    root: Path
    problems: list[tuple[str, str]] = field(
        default_factory=list
    )  # (shard file or "manifest", what)
    missing: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checked: int = 0
    planned: int = 0
    quick: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems and not self.missing

    def bad_shards(self) -> list[str]:
        """Names of the shard files with problems, each once, in order."""
        return list(dict.fromkeys(where for where, _ in self.problems if where != "manifest"))

    def lines(self) -> list[str]:
        """Human-readable report lines."""
        out = [f"BAD {where}: {what}" for where, what in self.problems]
        if self.missing:
            shown = ", ".join(str(k) for k in self.missing[:20])
            more = f" (+{len(self.missing) - 20} more)" if len(self.missing) > 20 else ""
            out.append(
                f"INCOMPLETE: {len(self.missing)} of {self.planned} planned shards missing: "
                f"{shown}{more}"
            )
        out += [f"warning: {w}" for w in self.warnings]
        how = "structure only (--quick: no checksums)" if self.quick else "checksums and structure"
        status = "OK" if self.ok else "FAILED"
        out.append(
            f"{status}: {self.checked - len(self.bad_shards())} of {self.planned} shards good "
            f"({how})"
        )
        return out


def _file_problems(path: Path, entry: dict[str, Any]) -> list[str]:
    """The cheap checks of one listed shard file: present, a plain file, the size the manifest
    records, and the HDF5 signature at its start (no data read)."""
    _check_shard_file(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return ["file is missing"]
    if not stat.S_ISREG(st.st_mode):
        return ["is not a regular file"]
    found = []
    if st.st_size != int(entry.get("bytes", -1)):
        found.append(
            f"size {st.st_size} bytes, manifest says {entry.get('bytes')} (truncated or changed)"
        )
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(HDF5_SIGNATURE))
    except OSError as exc:
        return [*found, f"cannot be read ({exc.strerror or exc})"]
    if head != HDF5_SIGNATURE:
        found.append("does not start with the HDF5 signature (not an HDF5 file, or corrupt)")
    return found


def check_shard_files(root: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The cheap check ``ident3d info`` runs: ``(file, problem)`` for every shard listed in the
    manifest that is missing, not a plain file, of the wrong size or without the HDF5 signature.
    No checksums and no HDF5 parsing (that is ``verify --quick`` and ``verify``)."""
    root = Path(root)
    manifest = read_manifest(root)
    return [
        (e["file"], what)
        for e in manifest["shards"]
        for what in _file_problems(root / e["file"], e)
    ]


def _check_chunks(d: Any, count: int, file_size: int) -> list[str]:
    """``images`` must have one allocated chunk per sample, each inside the file (cheap: the
    chunk index only, no pixels read)."""
    try:
        n = d.id.get_num_chunks()
        if n != count:
            return [f"images have {n} stored chunks, expected {count} (one per sample)"]
        for j in range(n):
            info = d.id.get_chunk_info(j)
            if info.byte_offset is None or info.byte_offset + info.size > file_size:
                return [f"images chunk {j} lies outside the file (truncated or corrupt)"]
    except (OSError, RuntimeError, ValueError) as exc:
        return [f"images chunk index is unreadable ({str(exc).splitlines()[0]})"]
    return []


def _check_shard(
    root: Path, manifest: dict[str, Any], entry: dict[str, Any], quick: bool
) -> list[str]:
    """Problems with one listed shard (empty list when it is good)."""
    h5py = _h5py()

    path = root / entry["file"]
    kind = manifest["kind"]
    found = _file_problems(path, entry)
    if found and found[0] in ("file is missing", "is not a regular file"):
        return found
    size = path.stat().st_size
    if not quick:
        digest = sha256_file(path)
        if digest != entry.get("sha256"):
            found.append("SHA-256 checksum mismatch (the file changed or is corrupt)")
    count = int(entry["count"])
    expect = {
        "images": ((count, *_image_shape(kind, manifest["height"], manifest["width"])), np.uint8),
        "latents_raw": ((count, *_latent_shape(kind, manifest["raw_dim"])), np.float32),
        "latents": ((count, *_latent_shape(kind, SCENE_DIM)), np.float32),
    }
    if manifest.get("has_class"):
        expect["class"] = ((count,), None)
    try:
        with h5py.File(path, "r") as f:
            for name, (shape, dtype) in expect.items():
                if name not in f:
                    found.append(f"dataset {name!r} is missing")
                    continue
                d = f[name]
                if d.shape != shape:
                    found.append(f"{name} has shape {d.shape}, expected {shape}")
                    continue
                if dtype is not None and d.dtype != dtype:
                    found.append(f"{name} has dtype {d.dtype}, expected {np.dtype(dtype)}")
                    continue  # its values are not read (no object or string data)
                if name == "images" and d.chunks != (1, *shape[1:]):
                    found.append(f"images are chunked {d.chunks}, expected one sample per chunk")
                elif name == "images":
                    found += _check_chunks(d, count, size)
                if name.startswith("latents"):
                    values = d[()]
                    bad = ~np.isfinite(values).reshape(count, -1).all(axis=1)
                    if bad.any():
                        first = int(entry["start"]) + int(np.flatnonzero(bad)[0])
                        found.append(
                            f"{name} holds NaN/inf in {int(bad.sum())} samples (first {first})"
                        )
                if name == "class":
                    if d.dtype.kind not in "iu":
                        found.append(f"class has dtype {d.dtype}, expected an integer type")
                    else:
                        values = d[()]
                        n_cls = len(manifest.get("class_names") or []) or None
                        if (values < 0).any() or (n_cls is not None and (values >= n_cls).any()):
                            found.append("class holds labels out of range")
            for key in ("shard_index", "start", "count"):
                want = {"shard_index": entry["index"], "start": entry["start"], "count": count}[key]
                if key in f.attrs and int(f.attrs[key]) != int(want):
                    found.append(f"attribute {key} is {int(f.attrs[key])}, manifest says {want}")
    except OSError as exc:
        found.append(f"does not open or read as HDF5 ({str(exc).splitlines()[0]})")
    return found


def verify_dataset(root: str | os.PathLike[str], quick: bool = False) -> VerifyReport:
    """Check a dataset against its manifest: each listed shard exists, has the recorded size and
    SHA-256 (skipped when ``quick``), opens, has the planned shapes, dtypes, counts and
    one-sample chunks, and finite latents; reports missing shards of an incomplete dataset.

    Raises :class:`DataError` only when ``root`` is not a dataset at all (no directory, no
    manifest); an unreadable or inconsistent manifest is a finding in the report.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory.")
    if not (root / MANIFEST_NAME).is_file():
        raise DataError(f"{root} is not an ident3d dataset: it has no {MANIFEST_NAME}.")
    report = VerifyReport(root=root, quick=quick)
    try:
        manifest = read_manifest(root)
    except UnsafeDatasetError:
        raise  # a refusal, not a finding: nothing of such a dataset is opened
    except DataError as exc:
        report.problems.append(("manifest", str(exc)))
        return report
    n, size, num = manifest["n"], manifest["shard_size"], manifest["num_shards"]
    report.planned = num
    if num != math.ceil(n / size):
        report.problems.append(
            ("manifest", f"num_shards {num} disagrees with n={n}, shard_size={size}")
        )
        return report
    digits = manifest.get("shard_digits", MIN_SHARD_DIGITS)
    listed: dict[int, dict[str, Any]] = {}
    for entry in manifest["shards"]:
        try:
            k = int(entry["index"])
            start, count = shard_range(manifest, k)
        except (KeyError, TypeError, ValueError, UsageError) as exc:
            report.problems.append(("manifest", f"bad shard entry {entry!r:.80}: {exc}"))
            continue
        where = entry.get("file", f"shard {k}")
        if k in listed:
            report.problems.append(("manifest", f"shard {k} is listed twice"))
            continue
        listed[k] = entry
        if (int(entry.get("start", -1)), int(entry.get("count", -1))) != (start, count):
            report.problems.append(
                (
                    where,
                    f"manifest says samples from {entry.get('start')} count {entry.get('count')}, "
                    f"the plan says from {start} count {count}",
                )
            )
            continue
        if entry.get("file") != shard_file_name(k, digits):
            report.problems.append((where, f"file name should be {shard_file_name(k, digits)}"))
            continue
        report.checked += 1
        for what in _check_shard(root, manifest, entry, quick):
            report.problems.append((where, what))
    report.missing = [k for k in range(num) if k not in listed]
    try:  # shards counted through their commit record, not yet in manifest.json itself
        in_file = {int(e["index"]) for e in read_manifest(root, records=False)["shards"]}
    except (DataError, KeyError, TypeError, ValueError):
        in_file = set(listed)
    unmerged = sorted(k for k in listed if k not in in_file)
    if unmerged:
        report.warnings.append(
            f"{len(unmerged)} shard(s) (first {unmerged[0]}) are committed by their record in "
            f".records/ but not yet listed in {MANIFEST_NAME}; `ident3d merge {root}` lists them"
        )
    listed_files = {e.get("file") for e in listed.values()}
    stale = {p.name for p in stale_temp_files(root)}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if _SHARD_RE.match(entry.name) and entry.name not in listed_files:
            report.warnings.append(
                f"{entry.name} is not in the manifest (an unfinished commit); it does not count"
            )
        elif entry.name in stale:
            report.warnings.append(
                f"{entry.name} is a temporary file of a writer that is gone (an interrupted "
                f"write); render --resume or convert --resume removes it"
            )
        elif entry.name.startswith(".") and _TMP_MARK in entry.name:
            report.warnings.append(
                f"{entry.name} is a temporary file of a write in progress (or of another host)"
            )
    return report
