"""``ident3d eval --encoder | --embeddings`` in one call: :func:`evaluate_encoder` scores an
encoder that ``ident3d train`` did not make (or precomputed encodings) on a dataset and writes
the usual report, recording exactly what was evaluated.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ident3d.errors import DataError, UsageError
from ident3d.eval.encode import EvalData, dataset_latents, encode_images
from ident3d.eval.external import ExternalEncoder, _one_line, load_encoder
from ident3d.eval.factors import scoring_kwargs
from ident3d.eval.preprocess import Preprocess
from ident3d.eval.scoring import EvalResult, resolve_blocks, scorer
from ident3d.eval.write import write_report


def _checked_forward(model: nn.Module, preprocess: Preprocess, spec: str) -> Any:
    """``forward(x_uint8)`` for an external encoder: its errors and outputs that are not one
    ``(B, d)`` tensor per batch (``(B, ...)`` is flattened) become one line."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        inp = preprocess(x)
        try:
            out = model(inp)
        except Exception as exc:
            raise UsageError(
                f"encoder {spec} failed on a batch of shape {tuple(inp.shape)}: "
                f"{_one_line(exc)} (check --resize, --normalize and --features)"
            ) from None
        if not isinstance(out, torch.Tensor):
            raise UsageError(
                f"encoder {spec} returned a {type(out).__name__}, not a tensor; wrap it so "
                "that forward returns the (batch, dims) encodings, or pick --features"
            )
        if out.dim() < 1 or out.shape[0] != len(x):
            raise UsageError(
                f"encoder {spec} returned shape {tuple(out.shape)} for a batch of {len(x)}"
            )
        if out.is_complex():
            raise UsageError(f"encoder {spec} returned complex numbers")
        return out.reshape(len(x), -1)

    return forward


def _check_kernel_memory(
    n: int, kernel: bool, kernel_fit: int | None, device: torch.device
) -> None:
    from ident3d.train.memory import available_bytes

    if not kernel:
        return
    fit = int(kernel_fit) if kernel_fit is not None else min(10240, n // 2)
    need = 3 * 8 * fit * fit
    free = available_bytes(device)
    if free is not None and need > free:
        raise UsageError(
            f"--kernel-fit {fit} needs at least {need / 2**30:.3g} GiB but {device} has "
            f"{free / 2**30:.3g} GiB free; lower it"
        )


def evaluate_encoder(
    encoder: str | nn.Module | ExternalEncoder | None,
    data: str | Path,
    out: str | Path,
    *,
    embeddings: str | Path | None = None,
    embeddings_key: str | None = None,
    weights: str | Path | None = None,
    weights_key: str | None = None,
    features: str | None = None,
    resize: str | int | Sequence[int] | None = None,
    normalize: str = "dataset",
    bf16: bool = False,
    baseline: bool = False,
    samples: int | None = None,
    seed: int = 0,
    kernel: bool = True,
    kernel_fit: int | None = None,
    kernel_score: int | None = None,
    fit_fraction: float = 0.5,
    blocks: dict[str, Sequence[str | int]] | None = None,
    device: str = "auto",
    batch_size: int = 256,
    num_workers: int = 0,
    progress: bool | None = None,
) -> tuple[EvalResult, list[Path]]:
    """Score ``encoder`` (``--encoder``: ``MODULE:CALLABLE``, ``FILE.py:CALLABLE``,
    ``torchvision:NAME``, a TorchScript file, an ``nn.Module`` or a loaded
    :class:`ExternalEncoder`) or the precomputed ``embeddings`` (one row per sample of
    ``data``) on the first ``samples`` images of the dataset ``data``, with every metric of
    :func:`evaluate`, and write the report into ``out``. ``seed`` seeds the initialisation of
    models built without weights and the ``baseline`` ResNet18. Returns the result and the
    written files."""
    from ident3d.train import pick_device

    if out is None:
        raise UsageError("--out DIR is required with --encoder or --embeddings")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a report directory")
    if (encoder is None) == (embeddings is None):
        raise UsageError("give exactly one of --encoder or --embeddings")
    if str(data) == "synthetic":
        raise UsageError(
            "--encoder and --embeddings score a dataset: pass --data DIR (synthetic data "
            "belongs to the run that made it: use --run)"
        )
    if batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    dev = pick_device(device)
    ds, z, factors, info = dataset_latents(data, samples)
    names = factors.names
    n = info["n"]
    _check_kernel_memory(n, kernel, kernel_fit, dev)
    preprocess: Preprocess | None = None
    encode_rec: dict[str, Any] = {"device": str(dev)}
    if embeddings is not None:
        for opt, val in (
            ("--weights", weights),
            ("--weights-key", weights_key),
            ("--features", features),
            ("--resize", resize),
        ):
            if val is not None:
                raise UsageError(f"{opt} goes with --encoder, not --embeddings")
        if bf16:
            raise UsageError("--bf16 goes with --encoder, not --embeddings")
        from ident3d.eval.embeddings import load_embeddings

        t0 = time.perf_counter()
        h_all, source = load_embeddings(embeddings, info["n_total"], embeddings_key)
        enc = EvalData(
            h=h_all[:n],
            z=z,
            names=names,
            dataset=info,
            encode_s=time.perf_counter() - t0,
            factors=factors,
        )
    else:
        if embeddings_key is not None:
            raise UsageError("--embeddings-key goes with --embeddings FILE")
        ext = (
            encoder
            if isinstance(encoder, ExternalEncoder)
            else load_encoder(encoder, weights, weights_key, features, seed=seed)
        )
        source = ext.source
        stats = (ds.mean, ds.std) if normalize == "dataset" else None
        preprocess = Preprocess.build(normalize, resize, stats)
        model = ext.module.to(dev).eval()
        enc = encode_images(
            data,
            _checked_forward(model, preprocess, str(source.get("spec"))),
            dev,
            n=n,
            batch_size=batch_size,
            num_workers=num_workers,
            progress=progress,
            bf16=bf16,
        )
        bad = ~np.isfinite(enc.h).all(axis=1)
        if bad.any():
            raise DataError(
                f"encoder {source.get('spec')} produced NaN or infinite encodings for "
                f"{int(bad.sum())} of {n} images (first: sample {int(np.flatnonzero(bad)[0])})"
                + ("; try without --bf16" if bf16 else "")
            )
        encode_rec.update(
            batch_size=int(batch_size),
            dtype="bfloat16 autocast" if bf16 else "float32",
            num_workers=int(num_workers),
        )
    factor_kw = scoring_kwargs(enc.factors, enc.z)  # types, labels, the manifest's blocks
    if blocks:  # --block overrides the manifest's blocks (and their roles)
        factor_kw["blocks"] = resolve_blocks(blocks, enc.names)
        factor_kw.pop("block_roles", None)

    score = scorer(
        enc.z,
        enc.names,
        fit_fraction=fit_fraction,
        kernel=kernel,
        kernel_fit=kernel_fit,
        kernel_score=kernel_score,
        device=dev,
        **factor_kw,
    )

    result = score(enc.h)
    rep = result.report
    rep["source"] = source
    rep["preprocessing"] = preprocess.to_dict() if preprocess is not None else None
    rep["encode"] = encode_rec
    rep["dataset"] = enc.dataset
    if factor_kw.get("block_roles") and enc.factors is not None:  # where the roles came from
        rep["blocks_from"] = enc.factors.block_source
    rep["timing"]["encode_s"] = enc.encode_s
    if baseline:
        add_baselines(
            result,
            data,
            preprocess or Preprocess.build("dataset", None, (ds.mean, ds.std)),
            score,
            dev,
            n=n,
            batch_size=batch_size,
            num_workers=num_workers,
            seed=seed,
            progress=progress,
        )
    rep["device"] = str(dev)
    rep["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return result, write_report(result, out)


def add_baselines(
    result: EvalResult,
    data: str | Path,
    preprocess: Any,
    score: Any,
    device: torch.device,
    **kw: Any,
) -> None:
    """Add ``baselines`` (:func:`ident3d.eval.baseline.baseline_rows`, at the report's
    encoding width) to ``result.report``."""
    from ident3d.eval.baseline import baseline_rows
    from ident3d.eval.scoring import _clean

    rows = baseline_rows(data, int(result.report["encoding_dim"]), preprocess, score, device, **kw)
    result.report["baselines"] = _clean(rows)
    result.report["timing"]["baselines_s"] = sum(b["time_s"] for b in rows.values())
