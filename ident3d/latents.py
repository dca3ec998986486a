"""The latent model of 3DIdent: the factor table, spaces, marginals and conditionals (numpy only).

Everything here draws from a seeded :class:`numpy.random.Generator`. Dataset-level sampling
(:meth:`LatentModel.sample_pairs`) works in fixed blocks of :data:`BLOCK_SIZE` samples, block
``b`` seeded by ``SeedSequence(seed, spawn_key=(b,))``: sample ``i`` is the same whatever the
dataset size, the worker count or the sharding.

Conventions
-----------
* A *space* has a dimension ``dim``; points are rows of an ``(n, dim)`` float64 array.
* A *marginal* draws ``z ~ p(z)`` on a space; a *conditional* draws ``z~ ~ p(z~ | z)``.
* Box conditionals are truncated to the box by rejection, coordinate by coordinate (each
  coordinate of ``z~`` follows the noise distribution centred on ``z``, truncated to
  ``[low, high]``); never by clipping.
* On a sphere, additive conditionals are projected back to the sphere
  (``normalise(z + d)``), optionally keeping only draws with ``| |z + d| - 1 | < ext_tol``
  (the AnInfoNCE "extended sphere" rule); :class:`VMFConditional` samples the exact
  von Mises-Fisher distribution.
* A conditional may act on a subset ``dims`` of the coordinates; the others are copied.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ident3d.errors import UsageError

#: Samples per independently seeded block in :class:`LatentModel`.
BLOCK_SIZE = 1 << 14

# ---------------------------------------------------------------------------------------------
# The factor table: the one place that defines the 10 factors of 3DIdent, in column order.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Factor:
    """One ground-truth factor of 3DIdent.

    ``scene_unit`` is the unit of the scene-units latent column (``latents.npy`` in the
    original layout); how a raw value maps to it depends on the latent mode
    (:class:`LatentMapping`), whose parameters come from the scene preset.
    """

    index: int
    name: str
    kind: str  # "position" | "rotation" | "angle" | "hue"
    scene_unit: str
    description: str


FACTORS: tuple[Factor, ...] = (
    Factor(0, "pos_x", "position", "scene units", "object position x"),
    Factor(1, "pos_y", "position", "scene units", "object position y"),
    Factor(2, "pos_z", "position", "scene units", "object position z (lifted by z_lift * S)"),
    Factor(3, "rot_alpha", "rotation", "rad", "object rotation alpha (XYZ Euler, first)"),
    Factor(4, "rot_beta", "rotation", "rad", "object rotation beta (XYZ Euler, second)"),
    Factor(5, "rot_gamma", "rotation", "rad", "object rotation gamma (XYZ Euler, third)"),
    Factor(6, "spot_theta", "angle", "rad", "spotlight angle on its circle around the z axis"),
    Factor(7, "hue_object", "hue", "rad", "object hue angle: HSV hue = angle / (2 pi)"),
    Factor(8, "hue_spot", "hue", "rad", "spotlight hue angle: HSV hue = angle / (2 pi)"),
    Factor(9, "hue_background", "hue", "rad", "ground hue angle: HSV hue = angle / (2 pi)"),
)
FACTOR_NAMES: tuple[str, ...] = tuple(f.name for f in FACTORS)
N_FACTORS = len(FACTORS)


def factor_table() -> list[dict[str, Any]]:
    """The factor table as JSON-ready dicts (for manifests and reports)."""
    return [
        {
            "index": f.index,
            "name": f.name,
            "kind": f.kind,
            "raw_range": [-1.0, 1.0],
            "scene_unit": f.scene_unit,
            "description": f.description,
        }
        for f in FACTORS
    ]


def parse_dims(spec: str | Sequence[int | str] | None, dim: int) -> tuple[int, ...] | None:
    """Parse a factor subset: indices or factor names, comma-separated or a sequence.

    ``None``/``"all"`` means every coordinate. Ranges like ``"0-2"`` are accepted.
    """
    if spec is None:
        return None
    items: list[str | int]
    if isinstance(spec, str):
        if spec.strip().lower() in ("", "all"):
            return None
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    out: list[int] = []
    for item in items:
        if isinstance(item, str) and item in FACTOR_NAMES:
            out.append(FACTOR_NAMES.index(item))
        elif isinstance(item, str) and "-" in item.lstrip("-"):
            a, b = item.split("-", 1)
            try:
                out.extend(range(int(a), int(b) + 1))
            except ValueError:
                raise UsageError(f"bad factor range {item!r} in dims") from None
        else:
            try:
                out.append(int(item))
            except (TypeError, ValueError):
                raise UsageError(
                    f"unknown factor {item!r} in dims (use indices or one of "
                    f"{', '.join(FACTOR_NAMES)})"
                ) from None
    for i in out:
        if not 0 <= i < dim:
            raise UsageError(f"factor index {i} in dims is out of range for dimension {dim}")
    if not out:
        raise UsageError("dims selects no factor")
    return tuple(sorted(set(out)))


# ---------------------------------------------------------------------------------------------
# Spaces
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Marginals
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Conditionals p(z~ | z)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conditional(ABC):
    """Base class of additive conditionals ``z~ = z + d`` with independent coordinates.

    Subclasses define :meth:`_noise` (standard draws) and :meth:`_scales` (per-coordinate
    scale). ``dims`` restricts the change to a subset of coordinates. ``ext_tol`` applies on
    spheres only: keep draws with ``| |z + d| - 1 | < ext_tol`` before normalising.
    """

    dims: tuple[int, ...] | None = field(default=None, kw_only=True)
    ext_tol: float | None = field(default=None, kw_only=True)

    name = "additive"

    @abstractmethod
    def _noise(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """Standard (unit-scale) noise draws."""

    @abstractmethod
    def _scales(self, dim: int) -> np.ndarray:
        """Per-coordinate scale of the noise."""

    def _params(self) -> dict[str, Any]:
        return {}

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"type": self.name, **self._params()}
        if self.dims is not None:
            cfg["dims"] = list(self.dims)
        if self.ext_tol is not None:
            cfg["ext_tol"] = self.ext_tol
        return cfg

    def sample(self, z: np.ndarray, space: Space, rng: np.random.Generator) -> np.ndarray:
        """Draw one ``z~`` per row of ``z`` (``(n, dim)``)."""
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != space.dim:
            raise UsageError(f"z must be (n, {space.dim}), got {z.shape}")
        out = z.copy()
        scales = self._scales(space.dim)
        active = np.zeros(space.dim, dtype=bool)
        active[list(self.dims) if self.dims is not None else slice(None)] = True
        for sl, s in space.parts():
            act = active[sl]
            if not act.any():
                continue
            zs, sc = z[:, sl], scales[sl]
            if isinstance(s, Box):
                out[:, sl] = self._sample_box(zs, sc, act, s, rng)
            elif isinstance(s, Unbounded):
                d = self._noise(rng, zs.shape) * sc * act
                out[:, sl] = zs + d
            elif isinstance(s, Sphere):
                if not act.all():
                    raise UsageError(
                        "a conditional on a sphere must act on all of its coordinates or none"
                    )
                out[:, sl] = self._sample_sphere(zs, sc, rng)
            else:  # pragma: no cover - parts() yields elementary spaces only
                raise TypeError(s)
        return out

    def _sample_box(
        self, z: np.ndarray, sc: np.ndarray, act: np.ndarray, box: Box, rng: np.random.Generator
    ) -> np.ndarray:
        def noise(size: int | tuple[int, ...]) -> np.ndarray:
            return self._noise(rng, size)

        if act.all():
            return _truncate_by_rejection(noise, z, sc, box.low, box.high)
        out = z.copy()
        out[:, act] = _truncate_by_rejection(noise, z[:, act], sc[act], box.low, box.high)
        return out

    def _sample_sphere(self, z: np.ndarray, sc: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        y = z + self._noise(rng, z.shape) * sc
        if self.ext_tol is not None:
            bad = np.abs(np.linalg.norm(y, axis=1) - 1.0) >= self.ext_tol
            rounds = 0
            while bad.any():
                rounds += 1
                if rounds > 100_000:
                    raise UsageError(
                        "extended-sphere rejection did not converge: ext_tol too small"
                    )
                idx = np.nonzero(bad)[0]
                y[idx] = z[idx] + self._noise(rng, (idx.size, z.shape[1])) * sc
                bad[idx] = np.abs(np.linalg.norm(y[idx], axis=1) - 1.0) >= self.ext_tol
        return y / np.linalg.norm(y, axis=1, keepdims=True)


@dataclass(frozen=True)
class NormalConditional(Conditional):
    """``z~ = z + sigma * N(0, I)`` (per coordinate; truncated on a box)."""

    sigma: float = 0.1
    name = "normal"

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise UsageError(f"normal conditional needs sigma > 0, got {self.sigma}")

    def _noise(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(size)

    def _scales(self, dim: int) -> np.ndarray:
        return np.full(dim, self.sigma)

    def _params(self) -> dict[str, Any]:
        return {"sigma": self.sigma}


@dataclass(frozen=True)
class LaplaceConditional(Conditional):
    """``z~ = z + Laplace(0, scale)`` per coordinate (truncated on a box)."""

    scale: float = 0.1
    name = "laplace"

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise UsageError(f"Laplace conditional needs scale > 0, got {self.scale}")

    def _noise(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.laplace(0.0, 1.0, size)

    def _scales(self, dim: int) -> np.ndarray:
        return np.full(dim, self.scale)

    def _params(self) -> dict[str, Any]:
        return {"scale": self.scale}


@dataclass(frozen=True)
class GenNormalConditional(Conditional):
    """Generalised normal noise, density proportional to ``exp(-|d / scale|^p)``.

    ``p = 2`` is a normal with ``sigma = scale / sqrt(2)``; ``p = 1`` is Laplace. Sampled as
    ``scale * sign * G^(1/p)`` with ``G ~ Gamma(1/p, 1)`` (matches ``scipy.stats.gennorm``).
    """

    p: float = 2.0
    scale: float = 0.1
    name = "gennormal"

    def __post_init__(self) -> None:
        if not self.p > 0:
            raise UsageError(f"generalised normal needs p > 0, got {self.p}")
        if not self.scale > 0:
            raise UsageError(f"generalised normal needs scale > 0, got {self.scale}")

    def _noise(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        g = rng.gamma(1.0 / self.p, 1.0, size)
        sign = np.where(rng.random(size) < 0.5, -1.0, 1.0)
        return sign * g ** (1.0 / self.p)

    def _scales(self, dim: int) -> np.ndarray:
        return np.full(dim, self.scale)

    def _params(self) -> dict[str, Any]:
        return {"p": self.p, "scale": self.scale}


@dataclass(frozen=True)
class AnisotropicNormalConditional(Conditional):
    """``d ~ N(0, diag(1 / Lambda))``: the AnInfoNCE conditional (precision per coordinate).

    On a sphere with ``ext_tol`` set (0.1 in the paper), draws with ``| |z + d| - 1 | >= ext_tol``
    are rejected, then ``z~ = normalise(z + d)``. ``lambdas`` may also be named: ``"bimodal"``
    (five of 25 then five of 5) or ``"linspace"`` (``linspace(5, 25, n)``), see
    :func:`anisotropic_lambdas`.
    """

    lambdas: tuple[float, ...] = ()
    name = "anisotropic"

    def __post_init__(self) -> None:
        if not self.lambdas:
            raise UsageError("anisotropic conditional needs lambdas")
        if any(not (lam > 0) for lam in self.lambdas):
            raise UsageError("anisotropic conditional needs every lambda > 0")

    def _noise(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        return rng.standard_normal(size)

    def _scales(self, dim: int) -> np.ndarray:
        if len(self.lambdas) != dim:
            raise UsageError(
                f"anisotropic conditional has {len(self.lambdas)} lambdas for {dim} dims"
            )
        return 1.0 / np.sqrt(np.asarray(self.lambdas, dtype=np.float64))

    def _params(self) -> dict[str, Any]:
        return {"lambdas": list(self.lambdas)}


def anisotropic_lambdas(spec: str | Sequence[float], n: int) -> tuple[float, ...]:
    """Named Lambda settings of the AnInfoNCE paper, or explicit values.

    ``bimodal``: the first half 25, the rest 5. ``linspace``: ``linspace(5, 25, n)``.
    """
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "bimodal":
            half = n // 2
            return tuple([25.0] * half + [5.0] * (n - half))
        if s == "linspace":
            return tuple(float(x) for x in np.linspace(5.0, 25.0, n))
        try:
            vals = [float(x) for x in s.split(",") if x.strip()]
        except ValueError:
            raise UsageError(
                f"lambdas must be 'bimodal', 'linspace' or comma-separated numbers, got {spec!r}"
            ) from None
    else:
        vals = [float(x) for x in spec]
    if len(vals) != n:
        raise UsageError(f"got {len(vals)} lambdas for {n} dimensions")
    return tuple(vals)


@dataclass(frozen=True)
class VMFConditional:
    """von Mises-Fisher ``p(z~ | z) ∝ exp(kappa z^T z~)`` on a sphere (Wood's sampler).

    On box or unbounded parts of a product space the coordinates are kept unchanged.
    """

    kappa: float = 10.0
    dims: tuple[int, ...] | None = None
    name = "vmf"

    def __post_init__(self) -> None:
        if not self.kappa > 0:
            raise UsageError(f"vMF conditional needs kappa > 0, got {self.kappa}")

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"type": "vmf", "kappa": self.kappa}
        if self.dims is not None:
            cfg["dims"] = list(self.dims)
        return cfg

    def sample(self, z: np.ndarray, space: Space, rng: np.random.Generator) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != space.dim:
            raise UsageError(f"z must be (n, {space.dim}), got {z.shape}")
        out = z.copy()
        active = np.zeros(space.dim, dtype=bool)
        active[list(self.dims) if self.dims is not None else slice(None)] = True
        spheres = 0
        for sl, s in space.parts():
            if isinstance(s, Sphere) and active[sl].any():
                if not active[sl].all():
                    raise UsageError(
                        "a conditional on a sphere must act on all of its coordinates or none"
                    )
                out[:, sl] = sample_vmf(z[:, sl], self.kappa, rng)
                spheres += 1
        if spheres == 0:
            raise UsageError("the vMF conditional needs a sphere space")
        return out


def sample_vmf(mu: np.ndarray, kappa: float, rng: np.random.Generator) -> np.ndarray:
    """One vMF draw per row of ``mu`` (unit vectors in ``R^d``), Wood (1994)."""
    n, d = mu.shape
    m = d - 1
    b = m / (2.0 * kappa + math.sqrt(4.0 * kappa**2 + m**2))
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + m * math.log(1.0 - x0**2)
    w = np.empty(n)
    todo = np.arange(n)
    while todo.size:
        k = todo.size
        beta = rng.beta(m / 2.0, m / 2.0, k)
        ww = (1.0 - (1.0 + b) * beta) / (1.0 - (1.0 - b) * beta)
        u = rng.random(k)
        ok = kappa * ww + m * np.log(1.0 - x0 * ww) - c >= np.log(u)
        w[todo[ok]] = ww[ok]
        todo = todo[~ok]
    # a uniform direction orthogonal to mu
    v = rng.standard_normal((n, d))
    v -= np.sum(v * mu, axis=1, keepdims=True) * mu
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    out = w[:, None] * mu + np.sqrt(np.clip(1.0 - w**2, 0.0, None))[:, None] * v
    return out / np.linalg.norm(out, axis=1, keepdims=True)


AnyConditional = Conditional | VMFConditional

CONDITIONALS = ("normal", "laplace", "gennormal", "vmf", "anisotropic")


def make_conditional(
    name: str,
    *,
    dim: int,
    sigma: float = 0.1,
    p: float = 2.0,
    kappa: float = 10.0,
    lambdas: str | Sequence[float] | None = None,
    ext_tol: float | None = None,
    dims: str | Sequence[int | str] | None = None,
) -> AnyConditional | None:
    """A conditional by name with its parameters; ``none`` gives ``None`` (i.i.d. samples).

    ``sigma`` is the scale of every additive conditional: the standard deviation (normal),
    the Laplace scale ``b``, or the generalised normal's ``scale``.
    """
    sub = parse_dims(dims, dim)
    if name == "none":
        return None
    if name == "normal":
        return NormalConditional(sigma=sigma, dims=sub, ext_tol=ext_tol)
    if name == "laplace":
        return LaplaceConditional(scale=sigma, dims=sub, ext_tol=ext_tol)
    if name == "gennormal":
        return GenNormalConditional(p=p, scale=sigma, dims=sub, ext_tol=ext_tol)
    if name == "vmf":
        return VMFConditional(kappa=kappa, dims=sub)
    if name == "anisotropic":
        lam = anisotropic_lambdas(lambdas if lambdas is not None else "linspace", dim)
        return AnisotropicNormalConditional(lambdas=lam, dims=sub, ext_tol=ext_tol)
    raise UsageError(f"unknown conditional {name!r} (none, {', '.join(CONDITIONALS)})")


def conditional_from_config(cfg: dict[str, Any] | None) -> AnyConditional | None:
    if cfg is None:
        return None
    kind = cfg.get("type")
    dims = tuple(cfg["dims"]) if cfg.get("dims") is not None else None
    ext = cfg.get("ext_tol")
    if kind == "normal":
        return NormalConditional(sigma=float(cfg["sigma"]), dims=dims, ext_tol=ext)
    if kind == "laplace":
        return LaplaceConditional(scale=float(cfg["scale"]), dims=dims, ext_tol=ext)
    if kind == "gennormal":
        return GenNormalConditional(
            p=float(cfg["p"]), scale=float(cfg["scale"]), dims=dims, ext_tol=ext
        )
    if kind == "vmf":
        return VMFConditional(kappa=float(cfg["kappa"]), dims=dims)
    if kind == "anisotropic":
        return AnisotropicNormalConditional(
            lambdas=tuple(float(x) for x in cfg["lambdas"]), dims=dims, ext_tol=ext
        )
    raise UsageError(f"unknown conditional {kind!r} (none, {', '.join(CONDITIONALS)})")


# ---------------------------------------------------------------------------------------------
# The latent model: space + marginal + conditional, block-seeded dataset sampling
# ---------------------------------------------------------------------------------------------


def block_rng(seed: int, block: int) -> np.random.Generator:
    """The generator of block ``block`` of a dataset with global seed ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(block),)))


@dataclass(frozen=True)
class LatentModel:
    """A space with a marginal ``p(z)`` and an optional conditional ``p(z~ | z)``."""

    space: Space
    marginal: Uniform | Normal | Laplace = field(default_factory=Uniform)
    conditional: AnyConditional | None = None

    @property
    def dim(self) -> int:
        return self.space.dim

    def _block(self, seed: int, b: int, pairs: bool) -> np.ndarray:
        rng = block_rng(seed, b)
        z = self.marginal.sample(self.space, BLOCK_SIZE, rng)
        if not pairs:
            return z
        if self.conditional is None:
            raise UsageError("pairs need a conditional (got 'none')")
        zt = self.conditional.sample(z, self.space, rng)
        return np.stack([z, zt], axis=1)

    def sample_range(self, start: int, stop: int, seed: int, pairs: bool = True) -> np.ndarray:
        """Samples ``start:stop`` of the dataset with this seed: ``(k, 2, dim)`` or ``(k, dim)``.

        Sample ``i`` is identical whatever range it is drawn in. Singles equal the first
        element of the pairs with the same seed.
        """
        if not 0 <= start <= stop:
            raise UsageError(f"bad sample range {start}:{stop}")
        shape = (stop - start, 2, self.dim) if pairs else (stop - start, self.dim)
        out = np.empty(shape)
        for b in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
            blk = self._block(seed, b, pairs)
            lo = max(start, b * BLOCK_SIZE)
            hi = min(stop, (b + 1) * BLOCK_SIZE)
            out[lo - start : hi - start] = blk[lo - b * BLOCK_SIZE : hi - b * BLOCK_SIZE]
        return out

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` i.i.d. samples of the marginal, ``(n, dim)``."""
        return self.sample_range(0, n, seed, pairs=False)

    def sample_pairs(self, n: int, seed: int) -> np.ndarray:
        """``n`` pairs ``(z, z~)``, ``(n, 2, dim)``."""
        return self.sample_range(0, n, seed, pairs=True)

    def to_config(self) -> dict[str, Any]:
        return {
            "space": self.space.to_config(),
            "marginal": self.marginal.to_config(),
            "conditional": None if self.conditional is None else self.conditional.to_config(),
        }

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> LatentModel:
        return cls(
            space=space_from_config(cfg["space"]),
            marginal=marginal_from_config(cfg.get("marginal", {"type": "uniform"})),
            conditional=conditional_from_config(cfg.get("conditional")),
        )


# ---------------------------------------------------------------------------------------------
# Raw latents -> scene units (the modes of the original generator)
# ---------------------------------------------------------------------------------------------

HUE_MODES = ("colorsys", "wrap")


@dataclass(frozen=True)
class LatentMapping:
    """How raw latents become the 10 scene-unit factors, for one latent mode of a preset.

    ``kind = "box"`` (raw ``(N, 10)`` on ``[-1, 1]^10``): positions ``raw * position_scale``,
    the seven angles (rotations, spotlight angle, hues) ``raw * angle_scale`` radians.

    ``kind = "periodic"`` (raw ``(N, 11)``: 3 box coordinates then a unit vector in ``R^8``):
    x, y = ``raw * position_scale``; z = ``z_range[0] + (raw + 1) / 2 * (z_range[1] -
    z_range[0])``; the sphere point becomes 7 hyperspherical angles ``phi_1..phi_7``
    (``phi_k = arccos(s_k / |s_k..s_8|)``, ``phi_7`` flipped to ``2 pi - phi_7`` where
    ``s_8 <= 0`` so it lies in ``[0, 2 pi)``; see :func:`sphere_angles`), the first six doubled
    so every angle spans a full circle; they are, in order, alpha, beta, gamma, the spotlight
    angle and the object, spotlight and background hue angles.

    ``hue`` says how a hue angle becomes the HSV hue handed to ``colorsys.hsv_to_rgb``:
    ``colorsys`` passes ``angle / (2 pi)`` unchanged (the original; negative values give
    out-of-gamut colours), ``wrap`` takes it modulo 1 (always a valid colour).
    """

    mode: str
    kind: str
    position_scale: float = 3.0
    angle_scale: float = math.pi / 2
    z_range: tuple[float, float] = (0.0, 3.0)
    hue: str = "colorsys"

    def __post_init__(self) -> None:
        if self.kind not in ("box", "periodic"):
            raise UsageError(f"latent mode kind must be 'box' or 'periodic', got {self.kind!r}")
        if self.hue not in HUE_MODES:
            raise UsageError(f"hue mapping must be one of {HUE_MODES}, got {self.hue!r}")

    @property
    def raw_dim(self) -> int:
        return 10 if self.kind == "box" else 11

    def default_space(self) -> Space:
        """The raw latent space: ``[-1, 1]^10`` or ``[-1, 1]^3 x S^7``."""
        return Box(10) if self.kind == "box" else Product(Box(3), Sphere(8))

    def to_scene(self, raw: np.ndarray) -> np.ndarray:
        """``(..., raw_dim)`` raw latents -> ``(..., 10)`` scene units (angles in radians)."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape[-1] != self.raw_dim:
            raise UsageError(
                f"latent mode {self.mode!r} expects {self.raw_dim} raw columns, got {raw.shape[-1]}"
            )
        out = np.empty((*raw.shape[:-1], N_FACTORS))
        if self.kind == "box":
            out[..., :3] = raw[..., :3] * self.position_scale
            out[..., 3:] = raw[..., 3:] * self.angle_scale
            return out
        out[..., :2] = raw[..., :2] * self.position_scale
        lo, hi = self.z_range
        out[..., 2] = lo + (raw[..., 2] + 1.0) / 2.0 * (hi - lo)
        out[..., 3:] = sphere_angles(raw[..., 3:])
        return out

    def to_config(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "kind": self.kind,
            "position_scale": self.position_scale,
            "angle_scale": self.angle_scale,
            "z_range": list(self.z_range),
            "hue": self.hue,
        }

    @classmethod
    def from_preset_mode(cls, mode: str, cfg: dict[str, Any]) -> LatentMapping:
        """Build from a preset's ``[latents.modes.<mode>]`` table."""
        turns = cfg.get("angle_scale_turns", 0.25)
        return cls(
            mode=mode,
            kind=cfg["kind"],
            position_scale=float(cfg.get("position_scale", 3.0)),
            angle_scale=float(turns) * 2.0 * math.pi,
            z_range=tuple(float(x) for x in cfg.get("z_range", (0.0, 3.0))),  # type: ignore[arg-type]
            hue=cfg.get("hue", "colorsys"),
        )


def sphere_angles(s: np.ndarray) -> np.ndarray:
    """Unit vectors in ``R^d`` -> ``d - 1`` angles, as the original generator computes them.

    This is cl-ica's ``cartesian_to_spherical`` followed by its doubling step:
    ``phi_k = arccos(s_k / |s_k..s_d|)`` in ``[0, pi]`` for every ``k = 1..d-1`` (a zero tail
    norm counts as 1); the last one is flipped to ``2 pi - phi`` where ``s_d <= 0``, so it lies
    in ``[0, 2 pi)`` (not ``(-pi, pi]``); then all but the last are doubled to ``[0, 2 pi]``.
    Checked against the original's own scene latents in ``reference/orig-renders/periodic``.
    """
    s = np.asarray(s, dtype=np.float64)
    d = s.shape[-1]
    # tail norms |s_k..s_d| for k = 1..d
    tail = np.sqrt(np.cumsum(s[..., ::-1] ** 2, axis=-1)[..., ::-1])
    tail = np.where(tail == 0.0, 1.0, tail)
    phi = np.arccos(np.clip(s[..., : d - 1] / tail[..., : d - 1], -1.0, 1.0))
    last = phi[..., d - 2]
    phi[..., d - 2] = np.where(s[..., d - 1] <= 0.0, 2.0 * math.pi - last, last)
    phi[..., : d - 2] *= 2.0
    return phi


def hsv_to_rgb(h: np.ndarray, s: float, v: float, mode: str = "colorsys") -> np.ndarray:
    """Vectorised ``colorsys.hsv_to_rgb`` (``mode="colorsys"``: bit-for-bit the same, negative
    hues included) or with the hue wrapped into ``[0, 1)`` first (``mode="wrap"``)."""
    h = np.asarray(h, dtype=np.float64)
    if mode == "wrap":
        h = np.mod(h, 1.0)
    elif mode != "colorsys":
        raise UsageError(f"hue mapping must be one of {HUE_MODES}, got {mode!r}")
    if s == 0.0:
        return np.stack([np.full_like(h, v)] * 3, axis=-1)
    i = np.trunc(h * 6.0)  # int() truncates towards zero, as colorsys assumes
    f = h * 6.0 - i
    p = np.full_like(h, v * (1.0 - s))
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    vv = np.full_like(h, v)
    i = np.mod(i, 6).astype(np.int64)
    table = np.stack(
        [
            np.stack([vv, t, p], -1),
            np.stack([q, vv, p], -1),
            np.stack([p, vv, t], -1),
            np.stack([p, q, vv], -1),
            np.stack([t, p, vv], -1),
            np.stack([vv, p, q], -1),
        ],
        axis=0,
    )
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), axis=0)[0]


def latent_model_from_options(
    *,
    space: Space,
    marginal: str = "uniform",
    marginal_scale: float = 1.0,
    conditional: str = "normal",
    sigma: float = 0.1,
    p: float = 2.0,
    kappa: float = 10.0,
    lambdas: str | Sequence[float] | None = None,
    ext_tol: float | None = None,
    dims: str | Sequence[int | str] | None = None,
) -> LatentModel:
    """Build a :class:`LatentModel` from command-line style option values."""
    if marginal == "uniform":
        marg: Uniform | Normal | Laplace = Uniform()
    elif marginal == "normal":
        marg = Normal(marginal_scale)
    elif marginal == "laplace":
        marg = Laplace(marginal_scale)
    else:
        raise UsageError(f"unknown marginal {marginal!r} (uniform, normal, laplace)")
    cond = make_conditional(
        conditional,
        dim=space.dim,
        sigma=sigma,
        p=p,
        kappa=kappa,
        lambdas=lambdas,
        ext_tol=ext_tol,
        dims=dims,
    )
    return LatentModel(space=space, marginal=marg, conditional=cond)
