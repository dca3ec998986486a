"""Conditionals ``p(z~ | z)``: the additive ones (normal, Laplace, generalised normal,
anisotropic normal; truncated to a box by rejection, projected back to a sphere) and the exact
von Mises-Fisher conditional; :func:`make_conditional` builds one from option values.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents.factors import parse_dims
from ident3d.latents.marginals import _truncate_by_rejection
from ident3d.latents.spaces import Box, Space, Sphere, Unbounded


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
