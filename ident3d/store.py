"""Sharded HDF5 dataset store: manifest, writer, reader, verify, convert and export.

The on-disk format is specified (and versioned) in ``docs/format.md``; user docs in
``docs/store.md``. This module imports neither bpy nor torch.

Core API (what the renderer and the torch datasets build on)
-----------------------------------------------------------
A dataset is a directory holding ``manifest.json`` and shard files ``shard-00000.h5``, ...
(at least 5 digits; more when a dataset plans more than 100,000 shards, chosen once per
dataset so names always sort). Shard ``k`` holds samples ``[k * shard_size, min(n, (k + 1) *
shard_size))``; :func:`shard_range` gives the range.

Writing::

    manifest = create_dataset(root, kind="images", n=10_000, shard_size=1000, height=224,
                              width=224, raw_dim=10, config=resolved_config,
                              factor_table=latents.factor_table())
    for k in missing_shards(root):                 # resume: only shards not yet committed
        start, count = shard_range(manifest, k)
        with ShardWriter(root, k, start, count, "images", 224, 224, 10) as w:
            for j in range(count):                   # any order; every j exactly once
                w.write(j, image_hw3_uint8, raw_10, scene_10)
            # or w.write_batch(j0, images_nhw3, raw_n10, scene_n10)
        # leaving the block without an exception: file closed, SHA-256 computed, renamed to
        # shard-0000k.h5 and committed to the manifest (under an fcntl lock, so several
        # processes or machines can write different shards of one dataset at once).
        # An exception inside the block deletes the temporary file; nothing is committed.

``create_dataset`` reuses an existing manifest with the same plan and config (resume, several
machines); a different one raises :class:`UsageError` unless ``overwrite=True`` (which deletes
the old shards). Pairs: ``kind="pairs"``, images ``(2, H, W, 3)``, raw ``(2, raw_dim)``, scene
``(2, 10)``. Datasets with classes: ``has_class=True, class_names=[...]`` and ``cls=`` per sample.

Reading::

    ds = open_dataset(root)          # refuses an incomplete dataset unless allow_incomplete=True
    len(ds), ds.kind, ds.height, ds.width, ds.raw_dim, ds.class_names, ds.manifest
    ds.mean, ds.std                  # per channel (R, G, B), in [0, 1] units (ToTensor scale)
    s = ds.read(i)                   # Sample(images, raw, scene, cls); images uint8 (H, W, 3)
    ds.read_into(i, buf)             # only the images, into a preallocated uint8 buffer
                                     # or (2, H, W, 3); raw float32; scene float32; cls int|None
    b = ds.read_slice(a, b)          # the same fields batched along axis 0 (contiguous range);
                                     # out=buf fills a preallocated uint8 image buffer
    ds.shards()                      # [ShardInfo(index, file, path, start, count, sha256, ...)]
    ds.raw_latents(), ds.scene_latents(), ds.classes()   # whole tables, (N, ...) numpy

A :class:`Dataset` is cheap to build and to pickle: HDF5 files are opened lazily, per process
(the opener's pid is kept; a forked child re-opens), and never pickled. Latents and classes of
a shard are loaded into memory when the shard is first touched; images are read one sample
(one HDF5 chunk) at a time or as one contiguous slice, never with index lists (h5py fancy
indexing is quadratic).

Other entry points: :func:`commit_shard`, :func:`missing_shards`, :func:`is_complete`,
:func:`read_manifest`, :func:`shard_range`, :func:`verify_dataset` (``ident3d verify``),
:func:`describe_dataset` (``ident3d info``), :func:`convert_original` (``ident3d convert``),
:func:`export_original` (``ident3d export``), :func:`index_digits`, and the original-layout
readers :func:`scan_original_layout` and :func:`decode_png`.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import itertools
import json
import math
import os
import platform
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

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


# ----------------------------------------------------------------------------- manifest


@contextlib.contextmanager
def manifest_lock(root: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive ``fcntl.lockf`` lock on ``ROOT/.manifest.lock`` (POSIX record lock, which
    also works across machines on NFS with a lock daemon)."""
    path = Path(root) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Load ``ROOT/manifest.json``; :class:`DataError` if absent, unreadable or not ours."""
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
    return manifest


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    path = root / MANIFEST_NAME
    tmp = root / f".{MANIFEST_NAME}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "w") as fh:
            json.dump(manifest, fh, indent=1, default=_json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if _is_enospc(exc):
            raise DataError(f"disk full while writing {path}.") from None
        raise


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
)


def _remove_store_files(root: Path) -> None:
    """Delete the manifest, shard files and temporary files of a dataset (not other files)."""
    for entry in os.scandir(root):
        name = entry.name
        if (
            _SHARD_RE.match(name)
            or (name.startswith((".shard-", f".{MANIFEST_NAME}")) and _TMP_MARK in name)
            or name == MANIFEST_NAME
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


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
) -> dict[str, Any]:
    """Create (or re-open for resume) a dataset directory and its manifest; return the manifest.

    An existing manifest with the same plan (kind, n, shard size, shapes, compression, classes),
    config and factor table is reused as it is, with its committed shards: that is how a crashed
    run resumes and how several machines join one dataset. A different one raises
    :class:`UsageError` unless ``overwrite``, which deletes the old manifest and shards.
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
    }
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a directory.")
    root.mkdir(parents=True, exist_ok=True)
    with manifest_lock(root):
        if (root / MANIFEST_NAME).exists():
            try:
                old = read_manifest(root)
            except DataError:
                if not overwrite:
                    raise
                old = None
            if old is not None:
                differ = [k for k in _PLAN_KEYS if old.get(k) != plan[k]]
                if not differ:
                    return old
                if not overwrite:
                    raise UsageError(
                        f"{root} already holds a dataset with a different "
                        f"{', '.join(differ)}; pass overwrite (--overwrite) to replace it."
                    )
            _remove_store_files(root)
        elif overwrite:
            _remove_store_files(root)
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
    """Record a complete shard in the manifest (under the manifest lock); return the manifest.

    With ``tmp_path``, the finished temporary file is renamed to ``entry["file"]`` inside the
    same locked section, so two writers racing on one shard index cannot leave a manifest
    entry that describes the other writer's file. Without it, the file must already be in
    place. An earlier entry of the same index is replaced.
    """
    root = Path(root)
    with manifest_lock(root):
        manifest = read_manifest(root)
        index = int(entry["index"])
        start, count = shard_range(manifest, index)
        if (int(entry["start"]), int(entry["count"])) != (start, count):
            raise UsageError(
                f"shard {index} must hold samples {start}..{start + count - 1}, "
                f"not {entry['start']}..{int(entry['start']) + int(entry['count']) - 1}."
            )
        final = root / entry["file"]
        if tmp_path is not None:
            os.replace(tmp_path, final)
            _fsync_path(root, directory=True)
        elif not final.is_file():
            raise DataError(f"cannot commit shard {index}: {final} does not exist.")
        shards = [s for s in manifest["shards"] if int(s["index"]) != index]
        shards.append(dict(entry))
        shards.sort(key=lambda s: int(s["index"]))
        manifest["shards"] = shards
        try:
            _write_manifest(root, manifest)
        except BaseException:
            if tmp_path is not None:  # renamed but not committed: it must not look complete
                with contextlib.suppress(FileNotFoundError):
                    final.unlink()
            raise
    return manifest


def missing_shards(root: str | os.PathLike[str]) -> list[int]:
    """Indices of planned shards not yet committed (in order). Empty when complete."""
    manifest = read_manifest(root)
    done = {int(s["index"]) for s in manifest["shards"]}
    return [k for k in range(manifest["num_shards"]) if k not in done]


def is_complete(manifest: dict[str, Any]) -> bool:
    """Whether every planned shard is listed."""
    return len({int(s["index"]) for s in manifest["shards"]}) == manifest["num_shards"]


# ----------------------------------------------------------------------------- writer


class ShardWriter:
    """Write one shard to a temporary file; on clean exit rename it and commit it.

    ``create_dataset`` must have been called for ``root``; the arguments are checked against
    its manifest. Use as a context manager; every local index ``0 .. count-1`` must be written
    exactly once (any order) before the block ends. Latents are buffered in memory and written
    at close; images go to disk as they arrive (one HDF5 chunk per sample).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        shard_index: int,
        start: int,
        count: int,
        kind: str,
        height: int,
        width: int,
        raw_dim: int,
        compression: str | None = None,
        has_class: bool = False,
    ) -> None:
        self.root = Path(root)
        manifest = read_manifest(self.root)
        expect = {
            "kind": kind,
            "height": int(height),
            "width": int(width),
            "raw_dim": int(raw_dim),
            "has_class": bool(has_class),
        }
        if compression is not None:
            expect["compression"] = compression
        differ = [f"{k} {v!r} (manifest: {manifest.get(k)!r})" for k, v in expect.items()
                  if manifest.get(k) != v]  # fmt: skip
        if differ:
            raise UsageError(f"ShardWriter does not match {self.root}: {'; '.join(differ)}.")
        exp_start, exp_count = shard_range(manifest, int(shard_index))
        if (int(start), int(count)) != (exp_start, exp_count):
            raise UsageError(
                f"shard {shard_index} must hold {exp_count} samples from {exp_start}, "
                f"not {count} from {start}."
            )
        self.index = int(shard_index)
        self.start, self.count = exp_start, exp_count
        self.kind, self.height, self.width, self.raw_dim = kind, int(height), int(width), raw_dim
        self.has_class = bool(has_class)
        self.n_classes = len(manifest["class_names"]) if manifest.get("class_names") else None
        self.compression = manifest["compression"]
        self.file_name = shard_file_name(self.index, manifest.get("shard_digits", 5))
        self.path = self.root / self.file_name
        self.tmp_path = self.root / (
            f".{self.file_name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
        )
        self._img_shape = _image_shape(kind, self.height, self.width)
        self._raw_shape = _latent_shape(kind, self.raw_dim)
        self._scene_shape = _latent_shape(kind, SCENE_DIM)
        self._file: Any = None
        self._images: Any = None
        self._closed = False
        self.entry: dict[str, Any] | None = None

    # -- context management
    def __enter__(self) -> ShardWriter:
        import h5py

        try:
            self._file = h5py.File(self.tmp_path, "w")
            self._images = self._file.create_dataset(
                "images",
                shape=(self.count, *self._img_shape),
                dtype=np.uint8,
                chunks=(1, *self._img_shape),
                **_compression_kwargs(self.compression),
            )
        except BaseException as exc:
            self._abort()
            if _is_enospc(exc):
                raise DataError(f"disk full while creating a shard in {self.root}.") from None
            raise
        self._raw = np.zeros((self.count, *self._raw_shape), np.float32)
        self._scene = np.zeros((self.count, *self._scene_shape), np.float32)
        self._cls = np.full(self.count, -1, np.int32) if self.has_class else None
        self._written = np.zeros(self.count, bool)
        self._sum = np.zeros(3, np.float64)
        self._sumsq = np.zeros(3, np.float64)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None:
            self._abort()
            if exc is not None and _is_enospc(exc):
                raise DataError(
                    f"disk full while writing {self.file_name} in {self.root}."
                ) from exc
            return False
        self.close()
        return False

    def _abort(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)
        self._closed = True

    # -- writing
    def _check_open(self) -> None:
        if self._file is None or self._closed:
            raise RuntimeError("ShardWriter is not open: use it as a context manager.")

    def _accumulate(self, images: np.ndarray) -> None:
        # Exact integer sums in float64 (< 2**53 for any shard), via BLAS matrix-vector
        # products: numpy reductions over an axis of length 3 are ~10x slower.
        flat = images.reshape(-1, 3).astype(np.float64)
        ones = np.ones(flat.shape[0])
        self._sum += ones @ flat
        flat *= flat
        self._sumsq += ones @ flat

    def _check_latents(self, raw: np.ndarray, scene: np.ndarray, lo: int, hi: int) -> None:
        if not (np.isfinite(raw).all() and np.isfinite(scene).all()):
            raise DataError(
                f"latents of samples {self.start + lo}..{self.start + hi - 1} hold NaN or inf."
            )

    def write(
        self,
        local_index: int,
        images: np.ndarray,
        raw: np.ndarray,
        scene: np.ndarray,
        cls: int | None = None,
    ) -> None:
        """Store sample ``start + local_index``: images uint8 ``(H, W, 3)`` (pairs: ``(2, H, W,
        3)``), raw ``(raw_dim,)`` (pairs ``(2, raw_dim)``), scene ``(10,)`` (pairs ``(2, 10)``)."""
        self._check_open()
        j = int(local_index)
        if not 0 <= j < self.count:
            raise IndexError(f"local index {j} outside shard of {self.count} samples")
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.shape != self._img_shape:
            raise ValueError(
                f"images must be uint8 {self._img_shape}, got {images.dtype} {images.shape}"
            )
        raw = np.asarray(raw, np.float32).reshape(self._raw_shape)
        scene = np.asarray(scene, np.float32).reshape(self._scene_shape)
        self._check_latents(raw, scene, j, j + 1)
        if self.has_class:
            self._set_class(j, j + 1, cls)
        elif cls is not None:
            raise ValueError("cls given for a dataset without classes")
        if self._written[j]:
            raise ValueError(f"local index {j} written twice")
        try:
            self._images[j] = images
        except OSError as exc:
            if _is_enospc(exc):
                raise DataError(
                    f"disk full while writing {self.file_name} in {self.root}."
                ) from exc
            raise
        self._raw[j] = raw
        self._scene[j] = scene
        self._accumulate(images)
        self._written[j] = True

    def write_batch(
        self,
        local_start: int,
        images: np.ndarray,
        raw: np.ndarray,
        scene: np.ndarray,
        cls: np.ndarray | Sequence[int] | None = None,
    ) -> None:
        """Store a contiguous run of samples from ``start + local_start`` (arrays batched on
        axis 0, shapes as in :meth:`write`)."""
        self._check_open()
        images = np.asarray(images)
        m = images.shape[0] if images.ndim else 0
        lo, hi = int(local_start), int(local_start) + m
        if not (0 <= lo and hi <= self.count):
            raise IndexError(f"samples {lo}..{hi - 1} outside shard of {self.count} samples")
        if images.dtype != np.uint8 or images.shape[1:] != self._img_shape:
            raise ValueError(
                f"images must be uint8 (m, {self._img_shape}), got {images.dtype} {images.shape}"
            )
        raw = np.asarray(raw, np.float32).reshape(m, *self._raw_shape)
        scene = np.asarray(scene, np.float32).reshape(m, *self._scene_shape)
        self._check_latents(raw, scene, lo, hi)
        if self.has_class:
            self._set_class(lo, hi, cls)
        elif cls is not None:
            raise ValueError("cls given for a dataset without classes")
        if self._written[lo:hi].any():
            raise ValueError(f"some of local indices {lo}..{hi - 1} were written twice")
        try:
            self._images[lo:hi] = images
        except OSError as exc:
            if _is_enospc(exc):
                raise DataError(
                    f"disk full while writing {self.file_name} in {self.root}."
                ) from exc
            raise
        self._raw[lo:hi] = raw
        self._scene[lo:hi] = scene
        self._accumulate(images)
        self._written[lo:hi] = True

    def _set_class(self, lo: int, hi: int, cls: Any) -> None:
        if cls is None:
            raise ValueError("this dataset has classes: pass cls")
        values = np.asarray(cls, np.int64).reshape(-1)
        if values.size not in (1, hi - lo):
            raise ValueError(f"cls has {values.size} values for {hi - lo} samples")
        if (values < 0).any() or (self.n_classes is not None and (values >= self.n_classes).any()):
            raise DataError(f"class labels {values.tolist()[:5]} out of range")
        assert self._cls is not None
        self._cls[lo:hi] = values

    # -- closing
    def close(self) -> dict[str, Any]:
        """Finish the shard: write latents, close, hash, rename, commit. Returns its entry."""
        self._check_open()
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            self._abort()
            raise ValueError(
                f"shard {self.index} closed with {missing.size} of {self.count} samples unwritten "
                f"(first local index {int(missing[0])})"
            )
        try:
            f = self._file
            f.create_dataset("latents_raw", data=self._raw)
            f.create_dataset("latents", data=self._scene)
            if self._cls is not None:
                f.create_dataset("class", data=self._cls)
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["kind"] = self.kind
            f.attrs["shard_index"] = self.index
            f.attrs["start"] = self.start
            f.attrs["count"] = self.count
            f.close()
            self._file = None
            _fsync_path(self.tmp_path)
            digest = sha256_file(self.tmp_path)
            size = os.path.getsize(self.tmp_path)
            pixels = self.count * (2 if self.kind == "pairs" else 1) * self.height * self.width
            entry = {
                "index": self.index,
                "file": self.file_name,
                "start": self.start,
                "count": self.count,
                "sha256": digest,
                "bytes": size,
                "pixels": pixels,
                "channel_sum": [int(v) for v in np.rint(self._sum)],
                "channel_sumsq": [int(v) for v in np.rint(self._sumsq)],
                "written": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            }
            commit_shard(self.root, entry, tmp_path=self.tmp_path)
        except BaseException as exc:
            self._abort()
            if _is_enospc(exc):
                raise DataError(
                    f"disk full while writing {self.file_name} in {self.root}."
                ) from exc
            raise
        self._closed = True
        self.entry = entry
        return entry


# ----------------------------------------------------------------------------- reader


class Sample(NamedTuple):
    """One sample (or a batch from :meth:`Dataset.read_slice`, batched along axis 0).

    images: uint8 ``(H, W, 3)`` / pairs ``(2, H, W, 3)``; raw: float32 ``(raw_dim,)`` / ``(2,
    raw_dim)``; scene: float32 ``(10,)`` / ``(2, 10)``; cls: int (array for a batch) or None.
    """

    images: np.ndarray
    raw: np.ndarray
    scene: np.ndarray
    cls: Any


@dataclass(frozen=True)
class ShardInfo:
    """A complete shard as listed in the manifest."""

    index: int
    file: str
    path: Path
    start: int
    count: int
    sha256: str
    bytes: int
    entry: dict[str, Any] = field(repr=False, compare=False)

    @property
    def stop(self) -> int:
        return self.start + self.count


class _OpenShard:
    """One shard opened for reading in this process: images stay on disk, latents in memory.

    Uncompressed images are read with ``read_direct_chunk`` straight into a fresh array (one
    chunk is one sample), which skips HDF5's selection machinery and chunk cache (about 2.5x
    faster than ``dataset[j]``); compressed ones go through h5py with the filter pipeline.
    """

    __slots__ = ("cls", "direct", "file", "images", "raw", "sample_shape", "scene", "zeros")

    def __init__(self, path: Path, has_class: bool) -> None:
        h5py = _h5py()

        try:
            self.file = h5py.File(path, "r", rdcc_nbytes=0)
            self.images = self.file["images"]
            self.raw = self.file["latents_raw"][()]
            self.scene = self.file["latents"][()]
            self.cls = self.file["class"][()] if has_class else None
            plist = self.images.id.get_create_plist()
            self.direct = (
                plist.get_layout() == h5py.h5d.CHUNKED
                and plist.get_nfilters() == 0
                and self.images.chunks == (1, *self.images.shape[1:])
                and self.images.dtype == np.uint8
            )
        except (OSError, KeyError) as exc:
            raise DataError(f"cannot read shard {path}: {exc}; run `ident3d verify`.") from None
        self.sample_shape = self.images.shape[1:]
        self.zeros = (0,) * len(self.sample_shape)

    def read_into(self, j: int, out: np.ndarray) -> None:
        """Images of local sample ``j`` into ``out`` (C-contiguous, sample-shaped uint8)."""
        if self.direct:
            self.images.id.read_direct_chunk((j, *self.zeros), out=out.reshape(-1))
        else:
            out[...] = self.images[j]

    def read(self, j: int) -> np.ndarray:
        if self.direct:
            out = np.empty(self.sample_shape, np.uint8)
            self.images.id.read_direct_chunk((j, *self.zeros), out=out.reshape(-1))
            return out
        return self.images[j]


class Dataset:
    """Read access to a dataset directory (see the module docstring). Use :func:`open_dataset`."""

    def __init__(self, root: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.kind: str = manifest["kind"]
        self.n: int = int(manifest["n"])
        self.height: int = int(manifest["height"])
        self.width: int = int(manifest["width"])
        self.raw_dim: int = int(manifest["raw_dim"])
        self.shard_size: int = int(manifest["shard_size"])
        self.num_shards: int = int(manifest["num_shards"])
        self.has_class: bool = bool(manifest.get("has_class", False))
        self.class_names: list[str] | None = manifest.get("class_names")
        self.config: dict[str, Any] = manifest.get("config") or {}
        self._entries = {int(s["index"]): s for s in manifest["shards"]}
        self.complete = len(self._entries) == self.num_shards
        self._pid = -1
        self._open: dict[int, _OpenShard] = {}
        pixels = sum(int(s["pixels"]) for s in manifest["shards"])
        if pixels:
            s = np.array([s["channel_sum"] for s in manifest["shards"]], np.float64).sum(0)
            q = np.array([s["channel_sumsq"] for s in manifest["shards"]], np.float64).sum(0)
            mean = s / pixels
            var = np.maximum(q / pixels - mean**2, 0.0)
            self.mean: np.ndarray = mean / 255.0
            self.std: np.ndarray = np.sqrt(var) / 255.0
        else:
            self.mean = np.full(3, np.nan)
            self.std = np.full(3, np.nan)

    # -- pickling: never carry HDF5 handles across processes
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}
        state["_pid"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (
            f"Dataset({str(self.root)!r}, kind={self.kind!r}, n={self.n}, "
            f"{self.height}x{self.width}, shards {len(self._entries)}/{self.num_shards})"
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one sample's images: ``(H, W, 3)`` or ``(2, H, W, 3)``."""
        return _image_shape(self.kind, self.height, self.width)

    def shards(self) -> list[ShardInfo]:
        """Complete shards, in index order."""
        return [
            ShardInfo(
                index=k,
                file=e["file"],
                path=self.root / e["file"],
                start=int(e["start"]),
                count=int(e["count"]),
                sha256=e["sha256"],
                bytes=int(e["bytes"]),
                entry=e,
            )
            for k, e in sorted(self._entries.items())
        ]

    def missing_shards(self) -> list[int]:
        """Planned shards not in the manifest (empty for a complete dataset)."""
        return [k for k in range(self.num_shards) if k not in self._entries]

    def close(self) -> None:
        """Close the HDF5 files this process opened (they re-open on the next read)."""
        if self._pid == os.getpid():
            for sh in self._open.values():
                with contextlib.suppress(Exception):
                    sh.file.close()
        self._open = {}

    def _shard(self, k: int) -> _OpenShard:
        pid = os.getpid()
        if pid != self._pid:
            # A forked child must not use its parent's HDF5 handles: drop them unclosed.
            self._open = {}
            self._pid = pid
        sh = self._open.get(k)
        if sh is None:
            entry = self._entries.get(k)
            if entry is None:
                start, count = shard_range(self.manifest, k)
                raise DataError(
                    f"samples {start}..{start + count - 1} are in shard {k}, which {self.root} "
                    f"does not have yet."
                )
            sh = _OpenShard(self.root / entry["file"], self.has_class)
            self._open[k] = sh
        return sh

    def _index(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"sample {i} out of range for a dataset of {self.n}")
        return i

    def read(self, i: int) -> Sample:
        """Sample ``i`` (negative indices count from the end)."""
        i = self._index(i)
        k, j = divmod(i, self.shard_size)
        sh = self._shard(k)
        return Sample(
            sh.read(j),
            sh.raw[j].copy(),
            sh.scene[j].copy(),
            int(sh.cls[j]) if sh.cls is not None else None,
        )

    def read_images(self, i: int) -> np.ndarray:
        """Only the images of sample ``i``."""
        i = self._index(i)
        k, j = divmod(i, self.shard_size)
        return self._shard(k).read(j)

    def read_into(self, i: int, out: np.ndarray) -> None:
        """Images of sample ``i`` into ``out``, a C-contiguous uint8 array of ``image_shape``
        (e.g. one row of a pinned batch buffer): one HDF5 chunk, no intermediate array for
        uncompressed shards."""
        if out.shape != self.image_shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous uint8 array of shape {self.image_shape}")
        i = self._index(i)
        k, j = divmod(i, self.shard_size)
        self._shard(k).read_into(j, out)

    def read_slice(self, a: int, b: int, out: np.ndarray | None = None) -> Sample:
        """Samples ``a .. b-1`` batched on axis 0 (contiguous reads, one per shard touched).

        ``out``: an optional C-contiguous uint8 array of shape ``(b - a, *image_shape)`` that
        receives the images (reusing one buffer avoids page faults on fresh large arrays).
        """
        a, b = int(a), int(b)
        if not 0 <= a <= b <= self.n:
            raise IndexError(f"slice {a}:{b} out of range for a dataset of {self.n}")
        shape = (b - a, *self.image_shape)
        if out is None:
            images = np.empty(shape, np.uint8)
        else:
            if out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
                raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}")
            images = out
        raw = np.empty((b - a, *_latent_shape(self.kind, self.raw_dim)), np.float32)
        scene = np.empty((b - a, *_latent_shape(self.kind, SCENE_DIM)), np.float32)
        cls = np.empty(b - a, np.int64) if self.has_class else None
        i = a
        while i < b:
            k, j0 = divmod(i, self.shard_size)
            j1 = min(j0 + (b - i), shard_range(self.manifest, k)[1])
            sh = self._shard(k)
            lo, hi = i - a, i - a + (j1 - j0)
            if sh.direct:
                for j in range(j0, j1):
                    sh.read_into(j, images[lo + j - j0])
            else:
                sh.images.read_direct(images, np.s_[j0:j1], np.s_[lo:hi])
            raw[lo:hi] = sh.raw[j0:j1]
            scene[lo:hi] = sh.scene[j0:j1]
            if cls is not None:
                cls[lo:hi] = sh.cls[j0:j1]
            i += j1 - j0
        return Sample(images, raw, scene, cls)

    def _table(self, attr: str) -> np.ndarray:
        missing = self.missing_shards()
        if missing:
            raise DataError(
                f"{self.root} lacks shards {missing[:5]}: whole-dataset tables need every shard."
            )
        parts = [getattr(self._shard(k), attr) for k in range(self.num_shards)]
        return np.concatenate(parts, axis=0)

    def raw_latents(self) -> np.ndarray:
        """All raw latents, float32 ``(N, raw_dim)`` or ``(N, 2, raw_dim)``."""
        return self._table("raw")

    def scene_latents(self) -> np.ndarray:
        """All scene-unit latents, float32 ``(N, 10)`` or ``(N, 2, 10)``."""
        return self._table("scene")

    def classes(self) -> np.ndarray | None:
        """All class labels (int32 ``(N,)``) or None for a dataset without classes."""
        return self._table("cls") if self.has_class else None

    def iter_shards(self) -> Iterator[tuple[ShardInfo, Sample]]:
        """Each complete shard with its whole content (one shard in memory at a time)."""
        for info in self.shards():
            yield info, self.read_slice(info.start, info.stop)


def open_dataset(path: str | os.PathLike[str], allow_incomplete: bool = False) -> Dataset:
    """Open a dataset directory for reading.

    An incomplete dataset (planned shards missing, e.g. a render still running) raises
    :class:`DataError` unless ``allow_incomplete``; then ``len()`` is still the planned size and
    reading a sample of a missing shard raises :class:`DataError` (see ``.missing_shards()``).
    """
    manifest = read_manifest(path)
    ds = Dataset(path, manifest)
    if not ds.complete and not allow_incomplete:
        missing = ds.missing_shards()
        raise DataError(
            f"{path} is incomplete: {len(missing)} of {ds.num_shards} shards missing "
            f"(first {missing[0]}); finish or resume writing it, or open it with "
            f"allow_incomplete=True."
        )
    return ds


# ----------------------------------------------------------------------------- verify


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


def _check_shard(
    root: Path, manifest: dict[str, Any], entry: dict[str, Any], quick: bool
) -> list[str]:
    """Problems with one listed shard (empty list when it is good)."""
    h5py = _h5py()

    found: list[str] = []
    path = root / entry["file"]
    kind = manifest["kind"]
    if not path.is_file():
        return ["file is missing"]
    size = path.stat().st_size
    if size != int(entry.get("bytes", -1)):
        found.append(f"size {size} bytes, manifest says {entry.get('bytes')}")
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
                if name == "images" and d.chunks != (1, *shape[1:]):
                    found.append(f"images are chunked {d.chunks}, expected one sample per chunk")
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
    listed_files = {e.get("file") for e in listed.values()}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if _SHARD_RE.match(entry.name) and entry.name not in listed_files:
            report.warnings.append(
                f"{entry.name} is not in the manifest (an unfinished commit); it does not count"
            )
        elif entry.name.startswith(".") and _TMP_MARK in entry.name:
            report.warnings.append(
                f"{entry.name} is a temporary file from an interrupted write (or one in progress)"
            )
    return report


# ----------------------------------------------------------------------------- info


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        out: list[tuple[str, Any]] = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}{k}.")
        return out
    return [(prefix[:-1], d)]


def describe_dataset(root: str | os.PathLike[str]) -> str:
    """A human summary of a dataset (what ``ident3d info`` prints)."""
    root = Path(root)
    m = read_manifest(root)
    done = len({int(s["index"]) for s in m["shards"]})
    n_done = sum(int(s["count"]) for s in m["shards"])
    size = sum(int(s["bytes"]) for s in m["shards"])
    per = "pair" if m["kind"] == "pairs" else "image"
    cfg = m.get("config") or {}
    lines = [f"dataset      {root}"]
    state = "complete" if done == m["num_shards"] else f"INCOMPLETE, {n_done:,} written"
    lines.append(f"kind         {m['kind']}: {m['n']:,} {per}s ({state})")
    lines.append(
        f"shards       {done} of {m['num_shards']} complete, {m['shard_size']:,} samples each"
    )
    lines.append(
        f"images       {m['width']} x {m['height']} RGB uint8"
        + (" (2 views per sample)" if m["kind"] == "pairs" else "")
        + f", compression {m['compression']}"
    )
    lines.append(f"latents      raw {m['raw_dim']} columns, scene {m.get('scene_dim', SCENE_DIM)}")
    if m.get("has_class"):
        lines.append(f"classes      {', '.join(m.get('class_names') or []) or '(unnamed)'}")
    per_sample = size / n_done if n_done else 0.0
    lines.append(
        f"size         {_human_bytes(size)} on disk ({_human_bytes(per_sample)} per {per})"
    )
    for label, keys in (
        ("preset", ("preset",)),
        ("latent mode", ("latent_mode", "mode")),
        ("latent model", ("latent_model", "latents")),
        ("conditional", ("conditional",)),
        ("quality", ("quality",)),
        ("seed", ("seed", "seeds")),
    ):
        for key in keys:
            if key in cfg and cfg[key] is not None:
                value = cfg[key]
                if isinstance(value, dict) and isinstance(value.get("name"), str):
                    # a named record (preset, quality): its name and its scalar settings
                    extra = [
                        f"{k}={v}"
                        for k, v in value.items()
                        if k not in ("name", "path", "data") and isinstance(v, int | float | str)
                    ]
                    text = value["name"] + (f" ({', '.join(extra)})" if extra else "")
                else:
                    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                lines.append(f"{label:<12} {text if len(text) <= 100 else text[:97] + '...'}")
                break
    v = m.get("versions", {})
    made = ", ".join(
        f"{k} {v[k]}" for k in ("ident3d", "python", "blender", "h5py", "hdf5") if k in v
    )
    lines.append(f"made         {m.get('created', '?')} with {made}")
    if n_done:
        ds = Dataset(root, m)
        lines.append(
            "mean / std   "
            + " ".join(f"{x:.4f}" for x in ds.mean)
            + " / "
            + " ".join(f"{x:.4f}" for x in ds.std)
            + "  (R G B, [0, 1] units)"
        )
    flat = _flatten(cfg)
    if flat:
        lines.append("config")
        for key, value in flat[:60]:
            text = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"  {key} = {text if len(text) <= 100 else text[:97] + '...'}")
        if len(flat) > 60:
            lines.append(f"  ... {len(flat) - 60} more keys in {root / MANIFEST_NAME}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- convert

_PNG_RE = re.compile(r"^(\d+)\.png$")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class _SourcePart:
    """One class (or the whole split) of an original-layout folder."""

    cls: int | None
    raw_path: Path
    latents_path: Path | None
    images_dir: Path
    raw: np.ndarray
    scene: np.ndarray | None
    files: list[str]  # file name of image i, i = 0 .. N-1


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path} is missing ({what}).") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array ({what}): {exc}.") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.dtype.kind not in "fiu":
        raise DataError(
            f"{path} must be a numeric (N, D) array with N >= 1, got {arr.dtype} {arr.shape}."
        )
    if not np.isfinite(arr).all():
        raise DataError(f"{path} holds NaN or inf values.")
    return arr


def _index_images(images_dir: Path, n: int, label: str) -> list[str]:
    """File names of images 0..n-1 in ``images_dir`` (any zero padding), checking the count."""
    if not images_dir.is_dir():
        raise DataError(f"{images_dir} is missing: {label} has no image folder.")
    files: dict[int, str] = {}
    for entry in os.scandir(images_dir):
        m = _PNG_RE.match(entry.name)
        if not m:
            continue
        i = int(m.group(1))
        if i in files:
            raise DataError(
                f"{images_dir} holds two files for image {i}: {files[i]} and {entry.name}."
            )
        files[i] = entry.name
    if len(files) != n or (files and (min(files) != 0 or max(files) != n - 1)):
        absent = [i for i in range(n) if i not in files][:3]
        extra = sorted(i for i in files if not 0 <= i < n)[:3]
        detail = f"missing e.g. image {absent}" if absent else f"extra indices e.g. {extra}"
        raise DataError(
            f"{images_dir} holds {len(files)} PNG images but {label} has {n} latent rows ({detail})."
        )
    return [files[i] for i in range(n)]


def _box_mapping() -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]]:
    """The 3dident preset's box-mode raw->scene mapping (via :mod:`ident3d.latents`)."""
    from ident3d.latents import LatentMapping

    table: dict[str, Any] | None = None
    try:
        from ident3d.scenes import load_preset

        table = load_preset("3dident").data["latents"]["modes"]["box"]
    except Exception:  # the preset is data; fall back to the mapping's documented defaults
        table = None
    mapping = (
        LatentMapping.from_preset_mode("box", table)
        if table is not None
        else LatentMapping(mode="box", kind="box")
    )
    return mapping.to_scene, mapping.to_config()


def _scan_source(src: Path, split: str | None) -> tuple[str, Path, list[_SourcePart]]:
    """Find the layout of ``src``: ``("3dident" | "causal3dident", split dir, parts)``."""
    if not src.is_dir():
        raise DataError(f"{src} is not a directory.")
    if (src / "raw_latents.npy").exists():
        layout, base = "3dident", src
        names = [(None, "raw_latents.npy", "latents.npy", "images")]
    else:
        layout = "causal3dident"
        base = src
        if not any(_RAW_CLASS_RE.match(p.name) for p in src.iterdir()):
            splits = [s for s in ("trainset", "testset") if (src / s).is_dir()]
            if split is not None:
                want = {"train": "trainset", "test": "testset"}.get(split, split)
                if want not in ("trainset", "testset"):
                    raise UsageError(f"--split must be train or test, got {split!r}.")
                if not (src / want).is_dir():
                    raise DataError(f"{src} has no {want}/ folder.")
                base = src / want
            elif len(splits) == 1:
                base = src / splits[0]
            elif len(splits) == 2:
                raise UsageError(
                    f"{src} holds trainset/ and testset/: choose one with --split train|test."
                )
            else:
                raise DataError(
                    f"{src} is neither a 3DIdent folder (raw_latents.npy + images/) nor a "
                    f"Causal3DIdent one (trainset/, testset/ or raw_latents_<c>.npy + images_<c>/)."
                )
        classes = sorted(
            int(m.group(1)) for p in base.iterdir() if (m := _RAW_CLASS_RE.match(p.name))
        )
        if not classes:
            raise DataError(f"{base} holds no raw_latents_<c>.npy files.")
        bad = [c for c in classes if c >= len(CAUSAL3DIDENT_CLASSES)]
        if bad:
            raise DataError(f"{base} has class {bad[0]}; Causal3DIdent classes are 0..6.")
        names = [(c, f"raw_latents_{c}.npy", f"latents_{c}.npy", f"images_{c}") for c in classes]
    parts: list[_SourcePart] = []
    dim = None
    for c, raw_name, lat_name, img_name in names:
        raw = _load_npy(base / raw_name, "raw latents")
        if dim is None:
            dim = raw.shape[1]
        elif raw.shape[1] != dim:
            raise DataError(
                f"{base / raw_name} has {raw.shape[1]} columns, the other classes {dim}."
            )
        lat_path = base / lat_name
        scene = None
        if lat_path.exists():
            scene = _load_npy(lat_path, "scene latents")
            if scene.shape != (raw.shape[0], SCENE_DIM):
                raise DataError(
                    f"{lat_path} has shape {scene.shape}, but {raw_name} has {raw.shape[0]} rows "
                    f"and scene latents have {SCENE_DIM} columns."
                )
        label = raw_name
        files = _index_images(base / img_name, raw.shape[0], label)
        parts.append(_SourcePart(c, base / raw_name, lat_path if scene is not None else None,
                                 base / img_name, raw, scene, files))  # fmt: skip
    return layout, base, parts


_RAW_CLASS_RE = re.compile(r"^raw_latents_(\d+)\.npy$")


def _decode_png(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            head = fh.read(26)
            if head[:8] != _PNG_MAGIC:
                raise DataError(f"{path} is not a PNG file.")
            if len(head) == 26 and head[12:16] == b"IHDR" and head[24] != 8:
                raise DataError(f"{path} has {head[24]} bits per channel; expected 8-bit RGB.")
            fh.seek(0)
            with Image.open(fh) as im:
                im.load()
                mode = im.mode
                arr = np.asarray(im)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path} is not a readable PNG image ({exc}).") from None
    if mode == "RGBA":
        if not (arr[..., 3] == 255).all():
            raise DataError(f"{path} has transparent pixels; 3DIdent images are opaque RGB.")
        arr = arr[..., :3]
    elif mode != "RGB":
        raise DataError(f"{path} is a {mode} PNG; expected 8-bit RGB.")
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _decode_batch(task: tuple[list[str], tuple[int, int] | None]) -> np.ndarray:
    paths, shape = task
    out = None
    for j, p in enumerate(paths):
        img = _decode_png(p)
        if out is None:
            if shape is not None and img.shape[:2] != shape:
                raise DataError(f"{p} is {img.shape[1]} x {img.shape[0]} pixels; the others are "
                                f"{shape[1]} x {shape[0]}.")  # fmt: skip
            out = np.empty((len(paths), *img.shape), np.uint8)
        elif img.shape != out.shape[1:]:
            raise DataError(f"{p} is {img.shape[1]} x {img.shape[0]} pixels; the others are "
                            f"{out.shape[2]} x {out.shape[1]}.")  # fmt: skip
        out[j] = img
    assert out is not None
    return out


def _worker_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()
) -> Any:
    import multiprocessing as mp

    return mp.get_context("spawn").Pool(workers, initializer, initargs)


def _bounded_map(
    pool: Any, fn: Callable[[Any], Any], jobs: Sequence[Any], window: int
) -> Iterator[Any]:
    """``pool.imap`` in order, but with at most ``window`` jobs in flight, so decoded images
    never pile up in memory when writing is slower than decoding."""
    pending: collections.deque[Any] = collections.deque()
    it = iter(jobs)
    for job in itertools.islice(it, window):
        pending.append(pool.apply_async(fn, (job,)))
    while pending:
        result = pending.popleft().get()
        for job in itertools.islice(it, 1):
            pending.append(pool.apply_async(fn, (job,)))
        yield result


def _prepare_dst(dst: Path, overwrite: bool) -> bool:
    """Check DST for convert; returns whether DST was created here."""
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"{dst} exists and is not a directory.")
    if dst.exists():
        has_manifest = (dst / MANIFEST_NAME).exists()
        others = [e.name for e in os.scandir(dst) if e.name != LOCK_NAME]
        if has_manifest and not overwrite:
            raise UsageError(f"{dst} already holds a dataset; pass --overwrite to replace it.")
        if others and not has_manifest and not overwrite:
            raise UsageError(f"{dst} is not empty; choose a new folder or pass --overwrite.")
        return False
    return True


def _cleanup_dst(dst: Path, created: bool) -> None:
    with contextlib.suppress(OSError):
        _remove_store_files(dst)
    if created:
        with contextlib.suppress(OSError):
            (dst / LOCK_NAME).unlink()
        with contextlib.suppress(OSError):
            dst.rmdir()


def convert_original(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    workers: int | None = None,
    overwrite: bool = False,
    compression: str = DEFAULT_COMPRESSION,
    shard_size: int = DEFAULT_SHARD_SIZE,
    split: str | None = None,
    progress: bool = True,
    batch: int = 32,
) -> Path:
    """Pack an original 3DIdent or Causal3DIdent folder into a dataset at ``dst``.

    3DIdent: ``SRC/raw_latents.npy``, optional ``SRC/latents.npy``, ``SRC/images/<i>.png``.
    Causal3DIdent: ``SRC/trainset/`` or ``SRC/testset/`` (``split`` picks one when both exist)
    or the split folder itself, with ``raw_latents_<c>.npy`` and ``images_<c>/<i>.png`` per class
    ``c`` (optional ``latents_<c>.npy``); classes are concatenated in class order and stored as
    the ``class`` column. Without scene latents, they are computed from the raw ones by the
    3dident preset's box-mode mapping, and the manifest says so. PNGs are decoded by ``workers``
    processes (default: all cores); pixels are stored exactly. On any failure everything written
    to ``dst`` is removed again. Returns ``dst``.
    """
    src, dst = Path(src), Path(dst)
    _compression_kwargs(compression)
    if not isinstance(shard_size, int) or shard_size < 1:
        raise UsageError(f"--shard-size must be a positive integer, got {shard_size!r}.")
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}.")
    layout, base, parts = _scan_source(src, split)
    raw = np.concatenate([p.raw for p in parts]).astype(np.float32)
    n, raw_dim = raw.shape
    if all(p.scene is not None for p in parts):
        scene = np.concatenate([p.scene for p in parts]).astype(np.float32)  # type: ignore[misc]
        scene_source: Any = "latents.npy" if layout == "3dident" else "latents_<c>.npy"
    else:
        if raw_dim != SCENE_DIM:
            raise DataError(
                f"{base} has {raw_dim}-column raw latents and no scene latents file; only "
                f"10-column (box-mode) raw latents can be mapped to scene units."
            )
        to_scene, mapping_cfg = _box_mapping()
        scene = np.asarray(to_scene(np.concatenate([p.raw for p in parts])), np.float32)
        scene_source = {"computed_from_raw": True, "mapping": mapping_cfg}
    paths = [str(p.images_dir / f) for p in parts for f in p.files]
    cls = (
        np.concatenate([np.full(len(p.files), p.cls) for p in parts])
        if layout != "3dident"
        else None
    )
    height, width = _decode_png(paths[0]).shape[:2]
    config = {
        "origin": "converted",
        "source": {
            "layout": layout,
            "path": str(base.resolve()),
            "classes": [p.cls for p in parts] if cls is not None else None,
            "n_per_class": [len(p.files) for p in parts] if cls is not None else None,
        },
        "scene_latents": scene_source,
        "resolution": [width, height],
    }
    created = _prepare_dst(dst, overwrite)
    pool = None
    try:
        manifest = create_dataset(
            dst, "images", n, shard_size, height, width, raw_dim, config,
            factor_table=_factor_table(), compression=compression, overwrite=True,
            has_class=cls is not None,
            class_names=list(CAUSAL3DIDENT_CLASSES) if cls is not None else None,
        )  # fmt: skip
        tasks: list[tuple[int, int, int]] = []  # (shard, local start, stop)
        for k in range(manifest["num_shards"]):
            start, count = shard_range(manifest, k)
            tasks += [(k, j, min(j + batch, count)) for j in range(0, count, batch)]
        jobs = [([paths[shard_range(manifest, k)[0] + j] for j in range(a, b)], (height, width))
                for k, a, b in tasks]  # fmt: skip
        if workers > 1 and len(jobs) > 1:
            pool = _worker_pool(min(workers, len(jobs)))
            results: Iterator[np.ndarray] = _bounded_map(pool, _decode_batch, jobs, 4 * workers)
        else:
            results = map(_decode_batch, jobs)
        from tqdm import tqdm

        with tqdm(total=n, unit="img", desc="convert", disable=not progress) as bar:
            pos = 0
            for k in range(manifest["num_shards"]):
                start, count = shard_range(manifest, k)
                with ShardWriter(dst, k, start, count, "images", height, width, raw_dim,
                                 has_class=cls is not None) as w:  # fmt: skip
                    while pos < len(tasks) and tasks[pos][0] == k:
                        _, a, b = tasks[pos]
                        images = next(results)
                        g = slice(start + a, start + b)
                        w.write_batch(
                            a, images, raw[g], scene[g], cls[g] if cls is not None else None
                        )
                        bar.update(b - a)
                        pos += 1
    except BaseException as exc:
        if pool is not None:
            pool.terminate()
            pool.join()
            pool = None
        _cleanup_dst(dst, created)
        if isinstance(exc, OSError) and _is_enospc(exc):
            raise DataError(f"disk full while converting into {dst}; nothing was kept.") from None
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return dst


def _factor_table() -> list[dict[str, Any]] | None:
    try:
        from ident3d.latents import factor_table
    except ImportError:  # pragma: no cover - ident3d.latents ships with the package
        return None
    return factor_table()


# ----------------------------------------------------------------------------- export

_EXPORT_NAMES = re.compile(
    r"^(raw_latents(_\d+)?\.npy|latents(_\d+)?\.npy|images(_\d+)?|view[01]|pairs\.json)$"
)


def index_digits(n: int) -> int:
    """Zero padding of image names in the original layout: ceil(log10(n)) digits, so every
    index 0..n-1 fits (6 for 250,000; 3 for 1,000; at least 1)."""
    return len(str(max(int(n) - 1, 0)))


_EXPORT_STATE: dict[str, Any] = {}


def _export_init(root: str) -> None:
    _EXPORT_STATE["ds"] = open_dataset(root)


def _encode_task(task: tuple[int, int, int, list[str], int]) -> int:
    from PIL import Image

    a, b, view, paths, level = task
    images = _EXPORT_STATE["ds"].read_slice(a, b).images
    for img, path in zip(images if view < 0 else images[:, view], paths, strict=True):
        Image.fromarray(img).save(path, format="PNG", compress_level=level)
    return b - a


def export_original(
    root: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    png_compress_level: int = 1,
    batch: int = 32,
) -> Path:
    """Write a dataset in the original layout at ``dst`` (see ``docs/store.md``).

    images: ``raw_latents.npy``, ``latents.npy``, ``images/<i>.png`` (``index_digits(N)``
    zero-padded). With classes: the Causal3DIdent split layout, ``raw_latents_<c>.npy``,
    ``latents_<c>.npy``, ``images_<c>/<i>.png`` (``i`` counted within class ``c``). Pairs: two
    such roots ``view0/`` and ``view1/`` (row i of each is pair i) plus ``pairs.json``. Written
    into a temporary sibling folder and renamed to ``dst`` when complete. PNGs use zlib level
    ``png_compress_level`` (default 1: what Blender's default 15% PNG compression, which made
    the original files, maps to). Returns ``dst``.
    """
    ds = open_dataset(root)
    dst = Path(dst)
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}.")
    if dst.exists():
        if not dst.is_dir():
            raise UsageError(f"{dst} exists and is not a directory.")
        entries = [e.name for e in os.scandir(dst)]
        if entries:
            if not overwrite:
                raise UsageError(
                    f"{dst} is not empty (it may hold a dataset); pass --overwrite to replace it."
                )
            foreign = [e for e in entries if not _EXPORT_NAMES.match(e)]
            if foreign:
                raise UsageError(
                    f"{dst} holds {foreign[0]!r}, which an export does not write; refusing to "
                    f"replace a folder that is not an exported dataset."
                )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    raw_all, scene_all = ds.raw_latents(), ds.scene_latents()
    cls_all = ds.classes()
    views = [-1] if ds.kind == "images" else [0, 1]
    pool = None
    try:
        jobs: list[tuple[int, int, int, list[str], int]] = []
        for view in views:
            vroot = tmp if view < 0 else tmp / f"view{view}"
            vroot.mkdir(exist_ok=True)
            raw_v = raw_all if view < 0 else raw_all[:, view]
            scene_v = scene_all if view < 0 else scene_all[:, view]
            groups = [(None, np.arange(ds.n))] if cls_all is None else [
                (int(c), np.flatnonzero(cls_all == c)) for c in np.unique(cls_all)]  # fmt: skip
            names = np.empty(ds.n, object)
            for c, idx in groups:
                suffix = "" if c is None else f"_{c}"
                img_dir = vroot / f"images{suffix}"
                img_dir.mkdir()
                np.save(vroot / f"raw_latents{suffix}.npy", raw_v[idx])
                np.save(vroot / f"latents{suffix}.npy", scene_v[idx])
                digits = index_digits(len(idx))
                for local, g in enumerate(idx):
                    names[g] = str(img_dir / f"{local:0{digits}d}.png")
            for a in range(0, ds.n, batch):
                b = min(a + batch, ds.n)
                jobs.append((a, b, view, list(names[a:b]), png_compress_level))
        if ds.kind == "pairs":
            (tmp / "pairs.json").write_text(json.dumps({
                "format": "ident3d-export-pairs", "n": ds.n, "views": ["view0", "view1"],
                "note": "row i of view0 and row i of view1 are positive pair i",
                "source": str(Path(root).resolve())}, indent=1) + "\n")  # fmt: skip
        if workers > 1 and len(jobs) > 1:
            pool = _worker_pool(min(workers, len(jobs)), _export_init, (str(ds.root),))
            results: Iterator[int] = pool.imap_unordered(_encode_task, jobs, chunksize=1)
        else:
            _EXPORT_STATE["ds"] = ds
            results = map(_encode_task, jobs)
        from tqdm import tqdm

        with tqdm(total=ds.n * len(views), unit="img", desc="export", disable=not progress) as bar:
            for done in results:
                bar.update(done)
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException as exc:
        if pool is not None:
            pool.terminate()
            pool.join()
            pool = None
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and _is_enospc(exc):
            raise DataError(f"disk full while exporting to {dst}; nothing was kept.") from None
        raise
    finally:
        _EXPORT_STATE.pop("ds", None)
        if pool is not None:
            pool.close()
            pool.join()
    return dst


# Public names for the original-layout readers (ident3d.data reads such folders directly).
scan_original_layout = _scan_source
"""``scan_original_layout(src, split) -> (layout, split_dir, parts)``: see ``convert_original``."""
decode_png = _decode_png
"""``decode_png(path) -> uint8 (H, W, 3)``: strict 8-bit RGB PNG decoding (DataError otherwise)."""
