"""kNN diagnostics: how close the looked-up pairs are to the drawn ones, on a dataset
(:func:`knn_diagnostics`) or simulated (:func:`simulate_knn`), and their text summary.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from ident3d.data.knn import _ClassIndex, _snap
from ident3d.data.knn_pair_dataset import (
    KNNPairDataset,
    _knn_info,
    _KNNDraws,
    _make_conditional,
    summarise_knn,
)
from ident3d.data.sources import _open_source
from ident3d.errors import UsageError


def knn_diagnostics(
    path: str | os.PathLike[str],
    conditional: str = "normal",
    sigma: float = 0.1,
    n_pairs: int = 10_000,
    seed: int = 0,
    anchor: str = "marginal",
    **conditional_options: Any,
) -> dict[str, Any]:
    """How far 3DIdent-style nearest-neighbour pairs of a dataset are from the sampled pairs.

    Draws ``n_pairs`` pairs as :class:`KNNPairDataset` does (no images are read) and returns a
    dict: ``sampled_distance_mean``/``_median`` (the nominal conditional),
    ``retrieved_distance_mean``/``_median`` (the pairs training actually sees), their
    ``distance_ratio``, ``second_neighbour_fraction`` and ``snap_distance_mean`` (how far each
    draw moved to reach a stored latent), plus the setup.
    """
    src = _open_source(path)
    if src.kind == "pairs":
        raise UsageError(
            f"{path} holds rendered pairs, which are exact: kNN diagnostics apply to datasets "
            f"of single images (use PairDataset for these pairs)."
        )
    layout = src.layout
    ds = KNNPairDataset(src, conditional, sigma, seed, anchor=anchor, **conditional_options)
    out = ds.diagnostics(n_pairs=n_pairs)
    out["layout"] = layout
    return out


def simulate_knn(
    n_stored: int = 250_000,
    dim: int = 10,
    n_pairs: int = 10_000,
    conditional: str = "normal",
    sigma: float = 0.1,
    seed: int = 0,
    backend: str = "auto",
    **conditional_options: Any,
) -> dict[str, Any]:
    """:func:`knn_diagnostics` for a synthetic dataset of ``n_stored`` latents uniform on
    ``[-1, 1]^dim`` (the original 3DIdent setting: 250,000 in 10-D)."""
    from ident3d import latents as L

    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
    table = rng.uniform(-1.0, 1.0, (n_stored, dim)).astype(np.float32)
    space = L.Box(dim)
    cond = _make_conditional(conditional, dim, sigma, **conditional_options)
    draws = _KNNDraws(table, None, n_pairs, space, L.Uniform(), cond, seed, "marginal")
    index = _ClassIndex(table, None, backend, None, 1)
    z, zt, _ = draws.epoch(0)
    t0 = time.perf_counter()
    i, it, fb = _snap(index, z, zt, None, None)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {
        "stored": n_stored,
        "dim": dim,
        "conditional": cond.to_config(),
        "anchor": "marginal",
        "seed": seed,
    }
    out.update(summarise_knn(_knn_info(table, z, zt, i, it, fb)))
    out["lookups_per_second"] = n_pairs / seconds if seconds > 0 else float("inf")
    return out


def format_knn_diagnostics(d: dict[str, Any]) -> str:
    """Human lines for a :func:`knn_diagnostics` result (what ``ident3d info
    --knn-diagnostics`` prints)."""
    cond = d.get("conditional")
    if isinstance(cond, dict):
        params = ", ".join(f"{k} {v}" for k, v in cond.items() if k != "type")
        cond = f"{cond.get('type')} conditional ({params})"
    return "\n".join(
        [
            f"kNN pairs    {cond}, {d['pairs']:,} draws, seed {d['seed']}, "
            f"{d['anchor']} anchor, {d['stored']:,} stored latents in {d['dim']}-D",
            f"  sampled    mean distance {d['sampled_distance_mean']:.3f} "
            f"(median {d['sampled_distance_median']:.3f}): the nominal conditional",
            f"  retrieved  mean distance {d['retrieved_distance_mean']:.3f} "
            f"(median {d['retrieved_distance_median']:.3f}): the pairs training sees, "
            f"{d['distance_ratio']:.2f}x the sampled distance",
            f"  fallback   {100 * d['second_neighbour_fraction']:.1f}% of pairs: z and z~ snapped "
            f"to the same image, z~ took its second neighbour",
            f"  snapping   a draw moves {d.get('snap_distance_mean', float('nan')):.3f} on average "
            f"to reach a stored latent",
        ]
    )
