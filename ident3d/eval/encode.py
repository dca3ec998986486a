"""Inputs of an evaluation: encodings and factors (:class:`EvalData`) of a run, from fresh
synthetic samples (:func:`encode_synthetic`) or from a stored dataset (:func:`encode_dataset`).
"""

from __future__ import annotations

import contextlib
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
from ident3d.eval.factors import FactorInfo, dataset_factors

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
    factors: FactorInfo | None = None  # types and blocks (datasets: from the manifest)


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


def dataset_latents(
    path: str | Path, n: int | None = None
) -> tuple[Any, np.ndarray, FactorInfo, dict[str, Any]]:
    """Open a dataset for evaluation: the torch dataset (first view of pairs), its first ``n``
    (default all) raw latents as float64 ``(n, d)`` (with the class appended as a discrete
    factor for multi-class datasets), their :class:`FactorInfo` (names, types, blocks) and the
    report's ``dataset`` record. Checked: enough samples, latents present and finite."""
    from ident3d.train.config import open_checked

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
    cls = ds.source.classes()
    z, factors = dataset_factors(
        path, z, factor_names(z.shape[1], table), None if cls is None else cls[:n], ds.class_names
    )
    info = {
        "kind": "images",
        "path": str(Path(path)),
        "layout": ds.layout,
        "view": view,
        "n_total": int(total),
        "n": int(n),
        "latents": "raw",
    }
    return ds, z, factors, info


def encode_images(
    path: str | Path,
    forward: Any,
    device: torch.device,
    n: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool | None = None,
    bf16: bool = False,
) -> EvalData:
    """Encode the first ``n`` (default all) images of a dataset (the ident3d store or an
    original 3DIdent / Causal3DIdent folder; of a pairs dataset, the first view) in batches:
    ``forward`` gets each uint8 ``(B, 3, H, W)`` batch on ``device`` and returns its encodings
    (under bfloat16 autocast with ``bf16``, CUDA only)."""
    from ident3d import data as data_mod
    from ident3d.train.config import READ_ERRORS, data_read_error

    ds, z, factors, info = dataset_latents(path, n)
    n, total = info["n"], info["n_total"]
    if bf16 and device.type != "cuda":
        raise UsageError(f"--bf16 needs a CUDA device (encoding runs on {device})")
    subset = torch.utils.data.Subset(ds, range(n)) if n < total else ds
    loader = data_mod.make_loader(
        subset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    t0 = time.perf_counter()
    hs = []
    seen = 0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with _progress(n, "encoding", progress) as bar, torch.inference_mode():
        try:
            for batch in loader:
                x = batch[0].to(device, non_blocking=True)
                with autocast:
                    hs.append(forward(x).float())  # stays on the device: no sync per batch
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
        names=factors.names,
        dataset=info,
        encode_s=time.perf_counter() - t0,
        factors=factors,
    )


def encode_dataset(
    run: Any,
    path: str | Path,
    n: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool | None = None,
    bf16: bool = False,
) -> EvalData:
    """Encode the first ``n`` (default all) images of a dataset (the ident3d store or an
    original 3DIdent / Causal3DIdent folder; of a pairs dataset, the first view) in batches on
    the run's device, and return them with the dataset's raw latents."""
    if run.dgp is not None:
        raise UsageError(
            f"run {run.path} is a synthetic run: evaluate it with --data synthetic "
            "(fresh samples of its own data-generating process)."
        )
    return encode_images(
        path,
        lambda x: run.encoder(run.preprocess(x)),
        run.device,
        n=n,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        bf16=bf16,
    )
