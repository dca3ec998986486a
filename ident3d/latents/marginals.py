"""Marginals ``p(z)`` on a space: :class:`Uniform`, :class:`Normal`, :class:`Laplace`, and the
sampling helpers they share with the conditionals (uniform sphere, truncation by rejection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents.spaces import Box, Space, Sphere, Unbounded


def _uniform_sphere(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / norm


def _truncate_by_rejection(
    noise: Any,
    center: np.ndarray,
    scale: np.ndarray,
    low: float,
    high: float,
    max_rounds: int = 100_000,
) -> np.ndarray:
    """``center + scale * noise``, each entry redrawn until it lies in ``[low, high]``.

    ``noise(size)`` returns standard draws; ``scale`` broadcasts along the last axis (one
    scale per column). Per-entry rejection gives, per coordinate, the noise distribution
    centred on ``center`` and truncated to the interval.
    """
    out = center + noise(center.shape) * scale
    bad = (out < low) | (out > high)
    rows, cols = np.nonzero(bad)
    rounds = 0
    while rows.size:
        rounds += 1
        if rounds > max_rounds:
            raise UsageError(
                "rejection sampling did not converge: the conditional's scale is far too "
                "large for the box"
            )
        vals = center[rows, cols] + noise(rows.size) * scale[cols]
        ok = (vals >= low) & (vals <= high)
        out[rows[ok], cols[ok]] = vals[ok]
        rows, cols = rows[~ok], cols[~ok]
    return out


@dataclass(frozen=True)
class Uniform:
    """Uniform on a box (per coordinate) or on a sphere (rotation invariant)."""

    def sample(self, space: Space, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, space.dim))
        for sl, s in space.parts():
            if isinstance(s, Box):
                out[:, sl] = rng.uniform(s.low, s.high, size=(n, s.dim))
            elif isinstance(s, Sphere):
                out[:, sl] = _uniform_sphere(rng, n, s.dim)
            else:
                raise UsageError(
                    "a uniform marginal needs a box or a sphere, not an unbounded space"
                )
        return out

    def to_config(self) -> dict[str, Any]:
        return {"type": "uniform"}


@dataclass(frozen=True)
class Normal:
    """Independent ``N(0, sigma^2)`` coordinates; truncated by rejection on a box."""

    sigma: float = 1.0

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise UsageError(f"normal marginal needs sigma > 0, got {self.sigma}")

    def sample(self, space: Space, n: int, rng: np.random.Generator) -> np.ndarray:
        return _additive_marginal(space, n, rng, lambda k: self.sigma * rng.standard_normal(k))

    def to_config(self) -> dict[str, Any]:
        return {"type": "normal", "sigma": self.sigma}


@dataclass(frozen=True)
class Laplace:
    """Independent ``Laplace(0, scale)`` coordinates; truncated by rejection on a box."""

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise UsageError(f"Laplace marginal needs scale > 0, got {self.scale}")

    def sample(self, space: Space, n: int, rng: np.random.Generator) -> np.ndarray:
        return _additive_marginal(space, n, rng, lambda k: rng.laplace(0.0, self.scale, k))

    def to_config(self) -> dict[str, Any]:
        return {"type": "laplace", "scale": self.scale}


def _additive_marginal(space: Space, n: int, rng: np.random.Generator, noise: Any) -> np.ndarray:
    out = np.empty((n, space.dim))
    for sl, s in space.parts():
        zero = np.zeros((n, s.dim))
        if isinstance(s, Box):
            out[:, sl] = _truncate_by_rejection(noise, zero, np.ones(s.dim), s.low, s.high)
        elif isinstance(s, Unbounded):
            out[:, sl] = noise((n, s.dim))
        else:
            raise UsageError("normal and Laplace marginals need a box or an unbounded space")
    return out


def marginal_from_config(cfg: dict[str, Any]) -> Uniform | Normal | Laplace:
    kind = cfg.get("type")
    if kind == "uniform":
        return Uniform()
    if kind == "normal":
        return Normal(float(cfg.get("sigma", 1.0)))
    if kind == "laplace":
        return Laplace(float(cfg.get("scale", 1.0)))
    raise UsageError(f"unknown marginal {kind!r} (uniform, normal, laplace)")
