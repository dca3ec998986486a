"""Where chance lies: :func:`baseline_rows` scores the same data with two encoders that learned
nothing, a random-init ResNet18 (the papers' image encoder, seeded, at the evaluated encoder's
width) and raw pixels PCA'd to that width, for the ``baselines`` part of a report
(``--baseline``); :func:`baseline_markdown` is its section of ``report.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ident3d.eval.encode import encode_images

#: Raw pixels are area-averaged to at most this many pixels per side before the PCA (3 x 32 x 32
#: = 3,072 dimensions: the covariance stays small enough to decompose exactly).
PIXEL_SIDE = 32


def _summary(result: Any, extra: dict[str, Any]) -> dict[str, Any]:
    rep = result.report
    return {
        **extra,
        "linear_r2": rep["linear_r2"],
        "kernel_r2": rep["kernel_r2"],
        "mcc_pearson": rep["mcc_pearson"],
        "mcc_spearman": rep["mcc_spearman"],
        "encoding_dim": rep["encoding_dim"],
        "per_factor": [
            {"name": f["name"], "linear_r2": f["linear_r2"], "kernel_r2": f["kernel_r2"]}
            for f in rep["per_factor"]
        ],
    }


def random_resnet18(width: int, seed: int = 0) -> torch.nn.Module:
    """The papers' image encoder (torchvision ResNet18 with a ``10 * width`` LeakyReLU head to
    ``width`` outputs), initialised from ``torch.manual_seed(seed)`` (the global generator is
    restored afterwards), in eval mode."""
    from ident3d.models import build_encoder, default_model_spec

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_encoder(default_model_spec("torchvision", int(width)))
    return model.eval()


def baseline_rows(
    path: str | Path,
    width: int,
    preprocess: Callable[[torch.Tensor], torch.Tensor],
    score: Callable[[np.ndarray], Any],
    device: torch.device,
    n: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    seed: int = 0,
    progress: bool | None = None,
) -> dict[str, Any]:
    """The ``baselines`` of a report on the first ``n`` images of ``path``:

    - ``random_resnet18``: :func:`random_resnet18` of ``width`` on the images after
      ``preprocess`` (the evaluated encoder's own preprocessing);
    - ``pixels_pca``: the images in [0, 1], area-averaged to at most ``PIXEL_SIDE`` pixels per
      side, projected on their top ``min(width, pixels, n - 1)`` principal components (the
      covariance of all ``n`` images, in float64; no labels are involved).

    ``score(h)`` evaluates encodings with the report's own protocol (an ``EvalResult``).
    Both read the images once. With at most as many images as pixel dimensions the PCA
    scores come from the ``n x n`` Gram matrix of the kept pixels; otherwise from the
    ``pixels x pixels`` covariance, with a second pass for the projection.
    """
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    model = random_resnet18(width, seed).to(device)
    acc: dict[str, Any] = {}

    def first_pass(x: torch.Tensor) -> torch.Tensor:
        side = (min(x.shape[-2], PIXEL_SIDE), min(x.shape[-1], PIXEL_SIDE))
        px = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, side)
        px = px.reshape(len(x), -1).double()
        if "sum" not in acc:
            acc["side"] = side
            acc["sum"] = torch.zeros(px.shape[1], dtype=torch.float64, device=x.device)
            acc["sq"] = torch.zeros(px.shape[1], px.shape[1], dtype=torch.float64, device=x.device)
            acc["n"] = 0
            acc["kept"] = []
        acc["sum"] += px.sum(0)
        acc["sq"] += px.T @ px
        acc["n"] += len(px)
        if acc["kept"] is not None:  # fewer images than pixels: keep them for the Gram route
            acc["kept"].append(px)
            if acc["n"] > px.shape[1]:
                acc["kept"] = None
        return model(preprocess(x))

    enc = encode_images(path, first_pass, device, n, batch_size, num_workers, progress)
    res = score(enc.h)
    out["random_resnet18"] = _summary(
        res,
        {
            "description": "random-init ResNet18 (torchvision, no weights) with the papers' head "
            f"to {width} outputs, seed {seed}, on the encoder's preprocessing",
            "seed": int(seed),
            "time_s": time.perf_counter() - t0,
        },
    )

    t0 = time.perf_counter()
    count = acc["n"]
    mean = acc["sum"] / count
    dim = acc["sum"].shape[0]
    k = int(min(width, dim, count - 1))
    side = acc["side"]
    if acc["kept"] is not None:
        # n <= pixels: the principal component scores from the n x n Gram matrix (exact)
        xc = torch.cat(acc["kept"]) - mean
        evals, evecs = torch.linalg.eigh(xc @ xc.T)  # ascending
        top = evals[-k:].flip(0).clamp(min=0)
        h = (evecs[:, -k:].flip(1) * top.sqrt()).cpu().numpy()
        method = "Gram matrix"
    else:
        cov = acc["sq"] / count - torch.outer(mean, mean)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        comps = evecs[:, -k:].flip(1)  # top k, largest first

        def second_pass(x: torch.Tensor) -> torch.Tensor:
            px = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255.0, side)
            return (px.reshape(len(x), -1).double() - mean) @ comps

        h = encode_images(path, second_pass, device, n, batch_size, num_workers, progress).h
        top = evals[-k:].clamp(min=0)
        method = "covariance"
    total = float(evals.clamp(min=0).sum())
    explained = float(top.sum()) / total if total > 0 else 0.0
    out["pixels_pca"] = _summary(
        score(h),
        {
            "description": f"raw pixels ({side[0]} x {side[1]} area-averaged, [0, 1]) projected "
            f"on their top {k} principal components",
            "pixels": [int(side[0]), int(side[1])],
            "components": k,
            "explained_variance": explained,
            "pca": method,
            "time_s": time.perf_counter() - t0,
        },
    )
    return out


BASELINE_NAMES = {"random_resnet18": "random-init ResNet18", "pixels_pca": "raw pixels, PCA"}


def format_baselines(report: dict[str, Any], markdown: bool = False) -> str:
    """The encoder's headline scores next to its baselines' (a table; empty without them)."""
    from ident3d.eval.report import _table

    base = report.get("baselines")
    if not base:
        return ""
    rows = [["this encoder", report["linear_r2"], report["kernel_r2"], report["mcc_pearson"]]]
    rows += [
        [BASELINE_NAMES.get(k, k), b["linear_r2"], b["kernel_r2"], b["mcc_pearson"]]
        for k, b in base.items()
    ]
    return _table(["encoder", "linear R2", "kernel R2", "MCC Pearson"], rows, markdown=markdown)


def baseline_markdown(report: dict[str, Any]) -> list[str]:
    """The ``## Baselines`` lines of ``report.md`` (empty without baselines)."""
    base = report.get("baselines")
    if not base:
        return []
    lines = ["## Baselines", "", format_baselines(report, markdown=True), ""]
    lines += [f"- {BASELINE_NAMES.get(k, k)}: {b['description']}." for k, b in base.items()]
    return [*lines, ""]
