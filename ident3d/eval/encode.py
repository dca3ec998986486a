"""Inputs of an evaluation: encodings and factors (:class:`EvalData`) of a run, from fresh
synthetic samples (:func:`encode_synthetic`) or from a stored dataset (:func:`encode_dataset`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ident3d import metrics
from ident3d.errors import DataError, UsageError

#: Samples drawn for a synthetic run by default: 10,240 for kernel ridge to fit + 4,096 scored.
SYNTHETIC_SAMPLES = metrics.KERNEL_FIT_SAMPLES + 4096


@dataclass
class EvalData:
    """Encodings ``h`` ``(N, d_h)`` and factors ``z`` ``(N, d_z)`` (float64), factor
    ``names``, where they came from (``dataset``) and how long encoding took."""

    h: np.ndarray
    z: np.ndarray
    names: list[str]
    dataset: dict[str, Any]
    encode_s: float


def factor_names(d: int, table: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """Names for ``d`` factor columns: the dataset's factor table (or 3DIdent's, from
    :mod:`ident3d.latents`) when it has exactly ``d`` entries, else ``z0 .. z{d-1}``."""
    if table is None:
        from ident3d.latents import factor_table

        table = factor_table()
    # the class factor's entry (column "class") is not a latent column
    names = [str(row.get("name", "")) for row in table if row.get("column") != "class"]
    if len(names) == d and all(names) and len(set(names)) == d:
        return names
    return [f"z{i}" for i in range(d)]


def _progress(total: int, desc: str, enabled: bool | None) -> Any:
    from tqdm import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, file=sys.stderr)


def encode_synthetic(
    run: Any,
    n: int = SYNTHETIC_SAMPLES,
    seed: int = 0,
    batch_size: int = 4096,
    progress: bool | None = None,
) -> EvalData:
    """Encode ``n`` fresh samples of a synthetic run's own data-generating process, drawn
    from a ``torch.Generator`` seeded with ``seed`` on the run's device."""
    if run.dgp is None:
        raise UsageError(
            f"run {run.path} was trained on a dataset, not synthetic data: pass --data DIR."
        )
    if n < 4:
        raise UsageError(f"too few samples: {n} (need at least 4).")
    t0 = time.perf_counter()
    gen = torch.Generator(device=run.dgp.device)
    gen.manual_seed(int(seed))
    z, x = run.dgp.sample(n, gen)
    hs = []
    with _progress(n, "encoding", progress) as bar, torch.inference_mode():
        for xb in torch.split(x, batch_size):
            hs.append(run.encoder(xb.to(run.device)).float())
            bar.update(len(xb))
    h = torch.cat(hs).double().cpu().numpy()
    spec = run.dgp.spec
    return EvalData(
        h=h,
        z=z.double().cpu().numpy(),
        names=[f"z{i}" for i in range(z.shape[1])],
        dataset={
            "kind": "synthetic",
            "seed": int(seed),
            "n": int(n),
            "space": spec.space,
            "conditional": spec.conditional,
            "latent_dim": int(spec.n),
        },
        encode_s=time.perf_counter() - t0,
    )


def _open_images(path: str | Path) -> tuple[Any, int | None, list[dict[str, Any]] | None]:
    """An :class:`ident3d.data.ImageDataset` (for a pairs dataset a ``PairDataset`` and the
    view to use: 0, the anchors ``x`` with latents ``z``) and the store's factor table."""
    from ident3d import data as data_mod

    layout = data_mod.detect_layout(path)
    pairs = layout == "pairs-folder"
    table = None
    if layout == "store":
        from ident3d.store import open_dataset

        stored = open_dataset(path)
        pairs = stored.kind == "pairs"
        table = stored.manifest.get("factor_table")
    if pairs:
        return data_mod.PairDataset(path), 0, table
    return data_mod.ImageDataset(path), None, table


def encode_dataset(
    run: Any,
    path: str | Path,
    n: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool | None = None,
) -> EvalData:
    """Encode the first ``n`` (default all) images of a dataset (the ident3d store or an
    original 3DIdent / Causal3DIdent folder; of a pairs dataset, the first view) in batches on
    the run's device, and return them with the dataset's raw latents."""
    if run.dgp is not None:
        raise UsageError(
            f"run {run.path} is a synthetic run: evaluate it with --data synthetic "
            "(fresh samples of its own data-generating process)."
        )
    from ident3d import data as data_mod
    from ident3d.train.config import READ_ERRORS, data_read_error, open_checked

    opened: dict[str, Any] = {}

    def _open() -> Any:
        opened["ds"], opened["view"], opened["table"] = _open_images(path)
        return opened["ds"]

    ds = open_checked(path, _open)  # a manifest that does not match its files: one line
    view, table = opened["view"], opened["table"]
    total = len(ds)
    n = total if n is None else int(n)
    if n > total:
        raise UsageError(f"--samples {n} is more than the {total} samples of {path}.")
    if n < 4:
        raise UsageError(f"too few samples: {n} (need at least 4).")
    lat = np.asarray(ds.latents)
    if lat.size == 0 or lat.shape[0] != total:
        raise DataError(f"{path} has no latents for its {total} images.")
    if view is not None:
        lat = lat[:, view]
    z = lat[:n].astype(np.float64).reshape(n, -1)
    if not np.isfinite(z).all():
        raise DataError(f"{path} has NaN or infinite latents among its first {n} samples.")
    subset = torch.utils.data.Subset(ds, range(n)) if n < total else ds
    loader = data_mod.make_loader(
        subset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=run.device.type == "cuda",
    )
    t0 = time.perf_counter()
    hs = []
    seen = 0
    with _progress(n, "encoding", progress) as bar, torch.inference_mode():
        try:
            for batch in loader:
                x = batch[0]
                x = run.preprocess(x.to(run.device, non_blocking=True))
                hs.append(run.encoder(x).float())  # stays on the device: no sync per batch
                seen += len(x)
                bar.update(len(x))
        except READ_ERRORS as exc:  # a shard that does not match the manifest
            raise data_read_error(path, exc) from None
    h = torch.cat(hs).double().cpu().numpy()
    if seen != n:  # pragma: no cover - a loader that skips samples would be a bug
        raise RuntimeError(f"encoded {seen} images, expected {n}")
    return EvalData(
        h=h,
        z=z,
        names=factor_names(z.shape[1], table),
        dataset={
            "kind": "images",
            "path": str(Path(path)),
            "layout": ds.layout,
            "view": view,
            "n_total": int(total),
            "n": int(n),
            "latents": "raw",
        },
        encode_s=time.perf_counter() - t0,
    )
