"""Image/text datasets in the store: captions and text latents beside the images.

An image/text dataset (Multimodal3DIdent) is an ``images`` dataset whose manifest ``config``
holds ``"modality": "image-text"`` and whose shards hold, besides ``images``, ``latents_raw``
(the 11 image latents, ``latents_image.csv``'s columns), ``latents`` (scene units) and
``class`` (the shape), three more datasets (``docs/format.md``):

* ``text``: variable-length UTF-8 strings ``(N,)``, one caption per sample;
* ``color_name``: variable-length UTF-8 strings ``(N,)``, the colour name of the caption;
* ``latents_text``: int32 ``(N, 7)``, :data:`ident3d.latents.multimodal.TEXT_INT_COLUMNS`.

:class:`MultimodalShardWriter` is a :class:`~ident3d.store.writer.ShardWriter` that also takes
these (every sample's text must be written before the shard closes); :func:`read_text` reads
them back for the whole dataset, refusing anything but strings and integers of these shapes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.latents.multimodal import TEXT_INT_COLUMNS
from ident3d.store.manifest import read_manifest
from ident3d.store.writer import ShardWriter

MODALITY = "image-text"
TEXT_DATASETS = ("text", "color_name", "latents_text")


def is_multimodal(manifest: dict[str, Any]) -> bool:
    """Whether a manifest describes an image/text dataset."""
    cfg = manifest.get("config") or {}
    return isinstance(cfg, dict) and cfg.get("modality") == MODALITY


def require_multimodal(root: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of ``root``; :class:`UsageError` unless it is an image/text dataset."""
    manifest = read_manifest(root)
    if not is_multimodal(manifest):
        raise UsageError(
            f"{root} is not an image/text dataset (it holds no captions); render one with "
            "--preset multimodal3dident or convert a Multimodal3DIdent folder."
        )
    return manifest


class MultimodalShardWriter(ShardWriter):
    """A shard writer that also stores captions, colour names and text latents."""

    def __enter__(self) -> MultimodalShardWriter:
        super().__enter__()
        self._text: list[str | None] = [None] * self.count
        self._names: list[str | None] = [None] * self.count
        self._tlat = np.zeros((self.count, len(TEXT_INT_COLUMNS)), np.int32)
        return self

    def write_text(
        self,
        local_start: int,
        captions: Sequence[str],
        color_names: Sequence[str],
        text_latents: np.ndarray,
    ) -> None:
        """Captions, colour names and ``(m, 7)`` integer text latents of a contiguous run."""
        self._check_open()
        m = len(captions)
        lo, hi = int(local_start), int(local_start) + m
        t = np.asarray(text_latents)
        if not (0 <= lo and hi <= self.count):
            raise IndexError(f"samples {lo}..{hi - 1} outside shard of {self.count} samples")
        if len(color_names) != m or t.shape != (m, len(TEXT_INT_COLUMNS)):
            raise ValueError(f"text of {m} samples with {len(color_names)} names, {t.shape}")
        if any(self._text[j] is not None for j in range(lo, hi)):
            raise ValueError(f"text of local indices {lo}..{hi - 1} written twice")
        for j, (c, nm) in enumerate(zip(captions, color_names, strict=True)):
            if not isinstance(c, str) or "\n" in c or not isinstance(nm, str):
                raise DataError(f"caption of sample {self.start + lo + j} is not one line.")
            self._text[lo + j], self._names[lo + j] = c, nm
        self._tlat[lo:hi] = t

    def close(self) -> dict[str, Any]:
        import h5py

        self._check_open()
        missing = [j for j, c in enumerate(self._text) if c is None]
        if missing:
            self._abort()
            raise ValueError(
                f"shard {self.index} closed with {len(missing)} captions unwritten "
                f"(first local index {missing[0]})"
            )
        try:
            s = h5py.string_dtype("utf-8")
            self._file.create_dataset("text", data=np.array(self._text, dtype=object), dtype=s)
            self._file.create_dataset(
                "color_name", data=np.array(self._names, dtype=object), dtype=s
            )
            self._file.create_dataset("latents_text", data=self._tlat)
        except BaseException:
            self._abort()
            raise
        return super().close()


@dataclass(frozen=True)
class TextTable:
    """The text side of a whole image/text dataset."""

    captions: list[str]
    color_names: list[str]
    latents: np.ndarray  # int64 (N, 7): TEXT_INT_COLUMNS

    def column(self, name: str) -> np.ndarray:
        return self.latents[:, TEXT_INT_COLUMNS.index(name)]


def _strings(f: Any, name: str, count: int, path: Path) -> list[str]:
    import h5py

    d = f.get(name)
    if d is None or d.shape != (count,):
        raise DataError(f"shard {path} lacks {name} ({count},); run `ident3d verify`.")
    info = h5py.check_string_dtype(d.dtype)
    if info is None or info.encoding != "utf-8":
        raise DataError(f"shard {path} holds {name} of dtype {d.dtype}, not UTF-8 strings.")
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in d[()]]


def read_text(root: str | os.PathLike[str]) -> TextTable:
    """Captions, colour names and text latents of every sample of an image/text dataset."""
    import h5py

    manifest = require_multimodal(root)
    shards = sorted(manifest["shards"], key=lambda s: s["index"])
    if len(shards) != manifest["num_shards"]:
        raise DataError(f"{root} is incomplete: finish rendering it first.")
    caps: list[str] = []
    names: list[str] = []
    lat: list[np.ndarray] = []
    for s in shards:
        path = Path(root) / s["file"]
        if path.is_symlink() or s["file"] != Path(s["file"]).name:
            raise DataError(f"{root}: shard entry {s['file']!r} is not a shard file name.")
        try:
            with h5py.File(path, "r") as f:
                caps += _strings(f, "text", s["count"], path)
                names += _strings(f, "color_name", s["count"], path)
                d = f.get("latents_text")
                if d is None or d.dtype.kind not in "iu":
                    raise DataError(f"shard {path} lacks integer latents_text.")
                t = d[()]
                if t.shape != (s["count"], len(TEXT_INT_COLUMNS)):
                    raise DataError(f"shard {path}: latents_text has shape {t.shape}.")
                lat.append(t.astype(np.int64))
        except OSError as exc:
            raise DataError(f"cannot read shard {path}: {exc}.") from None
    return TextTable(caps, names, np.concatenate(lat) if lat else np.zeros((0, 7), np.int64))
