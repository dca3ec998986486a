"""Precomputed encodings: :func:`load_embeddings` reads ``--embeddings FILE.npy|.pt`` (one row
per dataset sample, in the dataset's order) without unpickling anything, and checks rows,
shape and finiteness.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.errors import DataError, UsageError
from ident3d.eval.external import is_unsafe_pickle, sha256_of, unsafe_global


def load_embeddings(
    path: str | Path, rows: int, key: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Encodings ``(rows, d)`` float64 from a ``.npy`` file (``allow_pickle=False``) or a
    ``.pt`` file (``torch.load(..., weights_only=True)``: a tensor, or a dict of them with
    ``key`` naming the entry). ``rows`` is the dataset's sample count; row ``i`` must be the
    encoding of sample ``i``. Returns the array and the record for the report."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--embeddings: {p} does not exist (or is not a file)")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr: Any = np.load(p, allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc):
                raise DataError(
                    f"--embeddings {p} holds Python objects (a pickled array); save a numeric "
                    "array with np.save"
                ) from None
            raise DataError(f"--embeddings {p} is not a readable .npy file") from None
        except OSError:
            raise DataError(f"--embeddings {p} is not a readable .npy file") from None
    elif suffix in (".pt", ".pth"):
        import torch

        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if not is_unsafe_pickle(exc):
                raise DataError(f"--embeddings {p} is not a file that torch.load reads") from None
            raise DataError(
                f"--embeddings {p} needs unsafe unpickling{unsafe_global(exc)} (it holds "
                "pickled Python objects); save a tensor with torch.save(tensor, FILE)"
            ) from None
        except Exception:
            raise DataError(f"--embeddings {p} is not a file that torch.load reads") from None
        if isinstance(obj, dict):
            if key is None or key not in obj:
                keys = ", ".join(map(repr, list(obj)[:8]))
                raise UsageError(
                    f"--embeddings {p} holds a dict ({keys}); name the tensor with --embeddings-key"
                    if key is None
                    else f"--embeddings-key {key!r}: {p} has no such entry (it has {keys})"
                )
            obj = obj[key]
        if not isinstance(obj, torch.Tensor):
            raise DataError(f"--embeddings {p} holds a {type(obj).__name__}, not a tensor")
        arr = obj.detach().cpu()
        if arr.is_complex():
            raise DataError(f"--embeddings {p} is complex-valued")
        arr = arr.double().numpy()
    else:
        raise UsageError(f"--embeddings must be a .npy or .pt file, got {p.name}")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"--embeddings {p} has dtype {arr.dtype}, not numbers")
    if arr.ndim != 2:
        raise DataError(
            f"--embeddings {p} has shape {tuple(arr.shape)}; it must be 2-D (one row per sample)"
        )
    if arr.shape[0] != rows:
        raise DataError(
            f"--embeddings {p} has {arr.shape[0]} rows but the dataset has {rows} samples "
            "(row i must encode sample i)"
        )
    if arr.shape[1] < 1:
        raise DataError(f"--embeddings {p} has no columns")
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise DataError(
            f"--embeddings {p} has NaN or infinite values in {int(bad.sum())} rows "
            f"(first: row {int(np.flatnonzero(bad)[0])})"
        )
    record = {
        "form": "embeddings",
        "file": str(p),
        "sha256": sha256_of(p),
        "shape": [int(arr.shape[0]), int(arr.shape[1])],
        "key": key,
    }
    return arr, record
