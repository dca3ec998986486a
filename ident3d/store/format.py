"""The store format's constants (format name and version, file names, kinds, compressions,
shard size) and the small helpers every part of the store shares: shard names and ranges,
checksums, JSON normalisation, fsync, compression options, array shapes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import re
import secrets
import socket
from pathlib import Path
from typing import Any

import numpy as np

from ident3d import __version__
from ident3d.errors import DataError, UsageError

FORMAT_NAME = "ident3d-store"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".manifest.lock"
KINDS = ("images", "pairs")
COMPRESSIONS = ("none", "lz4", "gzip")
# Chosen by benchmarks/bench_store.py; the reasoning is in docs/format.md.
DEFAULT_COMPRESSION = "none"
DEFAULT_SHARD_SIZE = 1000
SCENE_DIM = 10
MIN_SHARD_DIGITS = 5
CAUSAL3DIDENT_CLASSES = ("Teapot", "Hare", "Dragon", "Cow", "Armadillo", "Horse", "Head")

_SHARD_RE = re.compile(r"^shard-(\d+)\.h5$")
_TMP_MARK = ".tmp-"


# ----------------------------------------------------------------------------- helpers


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _normalise_json(value: Any, what: str) -> Any:
    """Round-trip ``value`` through JSON so comparisons see what the manifest will hold."""
    try:
        return json.loads(json.dumps(value, default=_json_default, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} must be JSON-serialisable: {exc}.") from None


def _is_enospc(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(1 << 20)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def shard_digits(num_shards: int) -> int:
    """Digits in shard file names: at least 5, more past 100,000 shards (fixed per dataset)."""
    return max(MIN_SHARD_DIGITS, len(str(max(num_shards - 1, 0))))


def shard_file_name(index: int, digits: int = MIN_SHARD_DIGITS) -> str:
    """``shard-00042.h5`` for ``index`` 42 (``digits`` from :func:`shard_digits`)."""
    return f"shard-{index:0{digits}d}.h5"


def shard_range(manifest: dict[str, Any], index: int) -> tuple[int, int]:
    """``(start, count)`` of planned shard ``index`` of a manifest."""
    n, size, num = manifest["n"], manifest["shard_size"], manifest["num_shards"]
    if not 0 <= index < num:
        raise UsageError(f"shard index {index} is out of range: the dataset plans {num} shards.")
    start = index * size
    return start, min(n, start + size) - start


def _h5py() -> Any:
    """``h5py`` with the ``hdf5plugin`` filters registered (needed to read lz4 shards)."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Blosc filter with HDF5)

    return h5py


def _compression_kwargs(name: str) -> dict[str, Any]:
    if name == "none":
        return {}
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    if name == "lz4":
        import hdf5plugin

        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    raise UsageError(f"unknown compression {name!r}; choose one of {', '.join(COMPRESSIONS)}.")


def _versions(blender_version: str | None) -> dict[str, Any]:
    import h5py

    out: dict[str, Any] = {
        "ident3d": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.version.version,
        "hdf5": h5py.version.hdf5_version,
    }
    try:
        import hdf5plugin

        out["hdf5plugin"] = hdf5plugin.version
    except ImportError:  # pragma: no cover - hdf5plugin is a dependency
        pass
    if blender_version is not None:
        out["blender"] = str(blender_version)
    return out


def _image_shape(kind: str, height: int, width: int) -> tuple[int, ...]:
    return (height, width, 3) if kind == "images" else (2, height, width, 3)


def _latent_shape(kind: str, dim: int) -> tuple[int, ...]:
    return (dim,) if kind == "images" else (2, dim)


# ----------------------------------------------------------------------------- stale files
# Temporary files and folders carry the pid of the process that made them (and, for files, a
# tag of its host): ``.shard-00007.h5.tmp-<pid>-<hex>-<host>``,
# ``.manifest.json.tmp-<pid>-<hex>[-<host>]`` (writer.py, manifest.py) and
# ``.DST.partial-<pid>-<hex>`` (export.py). Older ident3d wrote no host tag.
_TMP_RE = re.compile(
    r"^\.(?P<target>.+?)"
    + re.escape(_TMP_MARK)
    + r"(?P<pid>\d+)-[0-9a-f]+(?:-(?P<host>[0-9a-f]{8}))?$"
)


def _host_tag() -> str:
    """8 hex digits naming this host in temporary file names (PIDs only mean something on the
    host that made them: a dataset on a shared file system has writers on several machines)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (this process counts as alive; a zombie,
    exited but not reaped, counts as gone)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:  # a killed child its parent has not reaped yet is no writer any more
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return True


_pid_alive = pid_alive  # the name export.py and older code use


def stale_temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Temporary files in ``root`` (shard and manifest writes, ``.NAME.tmp-PID-...``) whose
    writer is gone: made on this host by a process that no longer exists. Files of live
    processes, and of other hosts (whose PIDs cannot be checked from here), are not listed;
    names without a host tag (older ident3d) count as this host's."""
    root = Path(root)
    here = _host_tag()
    found: list[Path] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        return found
    records = root / ".records"  # ident3d.store.records.RECORDS_DIR: its writes' temp files
    if records.is_dir() and not records.is_symlink():
        entries += sorted(os.scandir(records), key=lambda e: e.name)
    for entry in entries:
        m = _TMP_RE.match(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        if m["host"] is not None and m["host"] != here:
            continue
        if pid_alive(int(m["pid"])):
            continue
        found.append(Path(entry.path))
    return found


def remove_stale_temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Delete :func:`stale_temp_files` of ``root`` (never a live writer's); return them."""
    removed = []
    for path in stale_temp_files(root):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


# ----------------------------------------------------------------------------- untrusted input
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class UnsafeDatasetError(DataError):
    """A dataset whose manifest or files would make ident3d read or write outside its folder
    (a refusal, exit 2, never a mere finding of ``verify``)."""


def _check_shard_entry(root: Path, manifest: dict[str, Any], entry: Any) -> None:
    """Refuse a manifest shard entry that could make a reader leave ``root``: the file must be
    the format's own name for its index (no ``..``, no absolute path, no sub-folder)."""
    where = root / MANIFEST_NAME
    if not isinstance(entry, dict):
        raise UnsafeDatasetError(
            f"{where} lists a shard entry that is not an object: {entry!r:.60}."
        )
    index, name = entry.get("index"), entry.get("file")
    digits = manifest.get("shard_digits", MIN_SHARD_DIGITS)
    if not isinstance(digits, int) or not MIN_SHARD_DIGITS <= digits <= 20:
        raise UnsafeDatasetError(f"{where} has an invalid shard_digits {digits!r}.")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise UnsafeDatasetError(f"{where} lists a shard with an invalid index {index!r:.60}.")
    if name != shard_file_name(index, digits):
        raise UnsafeDatasetError(
            f"{where} names shard {index} {str(name)!r:.80}; only {shard_file_name(index, digits)} "
            f"is allowed (shard files are plain names inside the dataset folder)."
        )


def _check_shard_file(path: Path) -> None:
    """Refuse a shard file that is a symbolic link (it could lead outside the dataset)."""
    if path.is_symlink():
        raise UnsafeDatasetError(
            f"{path} is a symbolic link; shard files must be plain files inside the dataset folder."
        )


def write_json_atomic(
    path: str | os.PathLike[str], obj: Any, sort_keys: bool = False, sync_dir: bool = False
) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: a temporary name in the same folder (pid
    and host tagged, so a dead writer's leftovers are recognised), fsynced, then renamed (and,
    with ``sync_dir``, the folder fsynced). On failure the temporary file is removed and a
    full disk is one :class:`DataError`. Every JSON file of a dataset is written this way."""
    path = Path(path)
    tmp = path.with_name(
        f".{path.name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}-{_host_tag()}"
    )
    try:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=1, sort_keys=sort_keys, default=_json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        if sync_dir:
            _fsync_path(path.parent, directory=True)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if _is_enospc(exc):
            raise DataError(f"disk full while writing {path}.") from None
        raise
