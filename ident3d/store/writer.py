"""The shard writer: :class:`ShardWriter` fills one HDF5 shard under a temporary name and
commits it (rename + manifest update) when complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.store.format import (
    _TMP_MARK,
    FORMAT_NAME,
    FORMAT_VERSION,
    SCENE_DIM,
    _compression_kwargs,
    _fsync_path,
    _host_tag,
    _image_shape,
    _is_enospc,
    _latent_shape,
    sha256_file,
    shard_file_name,
    shard_range,
)
from ident3d.store.manifest import commit_shard, read_manifest


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
        manifest = read_manifest(self.root, records=False)  # the plan (records not needed)
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
            f".{self.file_name}{_TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}-{_host_tag()}"
        )
        self._img_shape = _image_shape(kind, self.height, self.width)
        self._raw_shape = _latent_shape(kind, self.raw_dim)
        self._scene_shape = _latent_shape(kind, SCENE_DIM)
        self._file: Any = None
        self._fd: tuple[int, int, int] | None = None
        self._images: Any = None
        self._closed = False
        self.entry: dict[str, Any] | None = None

    # -- context management
    def __enter__(self) -> ShardWriter:
        import h5py

        try:
            self._file = h5py.File(self.tmp_path, "w")
            self._fd = _file_descriptor(self._file)
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
        """Discard the temporary file. HDF5 flushes its caches on close; on a full disk that
        flush fails, the file stays open inside HDF5 and the library crashes (SIGSEGV) when it
        retries at interpreter exit. So the file's descriptor is first pointed at an anonymous
        in-memory file: the doomed flush then succeeds (into memory) and the close is clean."""
        if self._file is not None and self._fd is not None:
            _redirect_to_memory(self._fd)
        self._images = None  # (its release flushes too: only after the redirect)
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
        keep = []  # (a dataset released on a full disk would flush, fail and warn)
        try:
            f = self._file
            keep.append(f.create_dataset("latents_raw", data=self._raw))
            keep.append(f.create_dataset("latents", data=self._scene))
            if self._cls is not None:
                keep.append(f.create_dataset("class", data=self._cls))
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["kind"] = self.kind
            f.attrs["shard_index"] = self.index
            f.attrs["start"] = self.start
            f.attrs["count"] = self.count
            f.flush()
            keep.clear()
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


def _file_descriptor(h5file: Any) -> tuple[int, int, int] | None:
    """``(fd, st_dev, st_ino)`` of the OS file under an h5py file (sec2 driver), else None."""
    try:
        fd = int(h5file.id.get_vfd_handle())
        st = os.fstat(fd)
    except (AttributeError, OSError, TypeError, ValueError):
        return None
    return fd, st.st_dev, st.st_ino


def _redirect_to_memory(handle: tuple[int, int, int]) -> None:
    """Point the OS file descriptor under an open h5py file at a fresh ``memfd`` (Linux), so
    whatever HDF5 still writes before closing lands in memory, not on a (full) disk. Nothing
    happens unless the descriptor still refers to that file (it may have been closed)."""
    fd, dev, ino = handle
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (dev, ino):
            return
        mem = os.memfd_create("ident3d-abort")
    except (AttributeError, OSError):  # closed / not Linux
        return
    try:
        os.dup2(mem, fd)
    except OSError:
        pass
    finally:
        os.close(mem)


# ------------------------------------------------------------------ stale temporary files
