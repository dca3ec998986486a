"""Latent spaces: :class:`Box`, :class:`Sphere`, :class:`Unbounded`, :class:`Product`;
points are rows of an ``(n, dim)`` float64 array.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ident3d.errors import UsageError


class Space(ABC):
    """A latent space; points are rows of an ``(n, dim)`` array."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Number of coordinates."""

    @abstractmethod
    def contains(self, z: np.ndarray, atol: float = 1e-9) -> np.ndarray:
        """Boolean ``(n,)``: which rows lie in the space."""

    def parts(self) -> list[tuple[slice, Space]]:
        """The elementary spaces of a product, with their column slices."""
        return [(slice(0, self.dim), self)]

    @abstractmethod
    def to_config(self) -> dict[str, Any]:
        """JSON-ready description (inverse: :func:`space_from_config`)."""


@dataclass(frozen=True)
class Box(Space):
    """The box ``[low, high]^n``."""

    n: int
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UsageError(f"box dimension must be >= 1, got {self.n}")
        if not self.low < self.high:
            raise UsageError(f"box needs low < high, got [{self.low}, {self.high}]")

    @property
    def dim(self) -> int:
        return self.n

    def contains(self, z: np.ndarray, atol: float = 1e-9) -> np.ndarray:
        return np.all((z >= self.low - atol) & (z <= self.high + atol), axis=-1)

    def to_config(self) -> dict[str, Any]:
        return {"type": "box", "n": self.n, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Sphere(Space):
    """The unit sphere ``S^{n-1}`` embedded in ``R^n`` (``n`` coordinates, norm 1)."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 2:
            raise UsageError(f"sphere needs n >= 2 coordinates, got {self.n}")

    @property
    def dim(self) -> int:
        return self.n

    def contains(self, z: np.ndarray, atol: float = 1e-9) -> np.ndarray:
        return np.abs(np.linalg.norm(z, axis=-1) - 1.0) <= max(atol, 1e-9)

    def to_config(self) -> dict[str, Any]:
        return {"type": "sphere", "n": self.n}


@dataclass(frozen=True)
class Unbounded(Space):
    """All of ``R^n``."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UsageError(f"unbounded space dimension must be >= 1, got {self.n}")

    @property
    def dim(self) -> int:
        return self.n

    def contains(self, z: np.ndarray, atol: float = 1e-9) -> np.ndarray:
        return np.all(np.isfinite(z), axis=-1)

    def to_config(self) -> dict[str, Any]:
        return {"type": "unbounded", "n": self.n}


class Product(Space):
    """The product of spaces, coordinates concatenated in order."""

    def __init__(self, *spaces: Space) -> None:
        flat: list[Space] = []
        for s in spaces:
            flat.extend(p for _, p in s.parts())
        if not flat:
            raise UsageError("a product space needs at least one factor space")
        self.spaces: tuple[Space, ...] = tuple(flat)
        self._dim = sum(s.dim for s in flat)

    @property
    def dim(self) -> int:
        return self._dim

    def parts(self) -> list[tuple[slice, Space]]:
        out, start = [], 0
        for s in self.spaces:
            out.append((slice(start, start + s.dim), s))
            start += s.dim
        return out

    def contains(self, z: np.ndarray, atol: float = 1e-9) -> np.ndarray:
        ok = np.ones(z.shape[:-1], dtype=bool)
        for sl, s in self.parts():
            ok &= s.contains(z[..., sl], atol)
        return ok

    def to_config(self) -> dict[str, Any]:
        return {"type": "product", "spaces": [s.to_config() for s in self.spaces]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Product) and self.spaces == other.spaces

    def __hash__(self) -> int:
        return hash(self.spaces)

    def __repr__(self) -> str:
        return f"Product{self.spaces!r}"


def space_from_config(cfg: dict[str, Any]) -> Space:
    """Inverse of ``Space.to_config``."""
    kind = cfg.get("type")
    if kind == "box":
        return Box(int(cfg["n"]), float(cfg.get("low", -1.0)), float(cfg.get("high", 1.0)))
    if kind == "sphere":
        return Sphere(int(cfg["n"]))
    if kind == "unbounded":
        return Unbounded(int(cfg["n"]))
    if kind == "product":
        return Product(*(space_from_config(c) for c in cfg["spaces"]))
    raise UsageError(f"unknown space type {kind!r} (box, sphere, unbounded, product)")


def make_space(name: str, dim: int) -> Space:
    """A space by name: ``box``, ``sphere``, ``unbounded``."""
    if name == "box":
        return Box(dim)
    if name == "sphere":
        return Sphere(dim)
    if name == "unbounded":
        return Unbounded(dim)
    raise UsageError(f"unknown space {name!r} (box, sphere, unbounded)")
