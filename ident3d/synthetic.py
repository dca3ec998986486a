"""Synthetic data-generating processes in torch, sampled on the training device.

A :class:`SyntheticDGP` is a latent model (a space, a marginal and a conditional for the
positive partner) followed by a frozen invertible mixing MLP. It mirrors the numpy latent
model of :mod:`ident3d.latents` but draws everything with a seeded :class:`torch.Generator`
on the device the encoder trains on, so a training step never waits for the host.

Spaces (``space``):

- ``box``: ``z`` uniform on ``[low, high]^n``; the positive is truncated to the box by
  per-coordinate rejection (only the coordinates that fell outside are redrawn).
- ``sphere``: ``z`` uniform on the unit sphere ``S^(n-1)``; the positive is ``z + noise``
  projected back onto the sphere (vMF is sampled on the sphere directly).
- ``extended_sphere``: as ``sphere``, but ``z + noise`` is accepted only inside the shell
  ``| |z + noise| - 1 | < ext_tol`` (0.1; the AnInfoNCE rule) before it is projected, the
  rest is redrawn.
- ``unbounded``: ``z`` from a normal or Laplace marginal on ``R^n``, positives unconstrained.

Conditionals (``conditional``), each acting on an optional subset ``dims`` of the
coordinates (the others are copied unchanged into the positive):

- ``normal`` (scale ``sigma``), ``laplace`` (scale ``sigma``), ``gennormal`` (density
  proportional to ``exp(-|x / sigma|^p)``, shape ``p``), ``vmf`` (concentration ``kappa``, sphere
  spaces only, all dims), ``anisotropic`` (normal with diagonal precision ``Lambda``, i.e.
  ``d ~ N(0, diag(1 / Lambda))``; presets ``bimodal`` = five 25s then five 5s and
  ``linspace`` = ``linspace(5, 25, n)``).

The mixing is ``depth`` square linear maps with LeakyReLU(0.2) between them, each weight
matrix redrawn until its condition number is at most the best of 25,000 random draws (the
recipe of the original ``main_mlp.py``; see :func:`draw_mixing_weights`), all from
``mixing_seed``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from ident3d.errors import UsageError

SPACES = ("box", "sphere", "extended_sphere", "unbounded")
MARGINALS = ("uniform", "normal", "laplace")
CONDITIONALS = ("normal", "laplace", "gennormal", "vmf", "anisotropic")
LAMBDA_PRESETS = ("bimodal", "linspace")


def lambda_preset(name: str, n: int) -> list[float]:
    """The AnInfoNCE precision presets: ``bimodal`` (first half 25, second half 5) or
    ``linspace`` (``linspace(5, 25, n)``)."""
    if name == "bimodal":
        half = n // 2
        return [25.0] * (n - half) + [5.0] * half
    if name == "linspace":
        return [float(v) for v in np.linspace(5.0, 25.0, n)]
    raise UsageError(f"unknown Lambda preset {name!r}; choose one of {', '.join(LAMBDA_PRESETS)}")


@dataclass
class SyntheticSpec:
    """Everything that defines a synthetic data-generating process (JSON-ready)."""

    n: int = 10
    space: str = "sphere"
    marginal: str = "uniform"
    conditional: str = "vmf"
    sigma: float = 0.05
    p: float = 2.0
    kappa: float = 20.0
    lambdas: list[float] | str | None = None
    dims: list[int] | None = None
    low: float = -1.0
    high: float = 1.0
    ext_tol: float = 0.1
    mixing_depth: int = 3
    mixing_seed: int = 0
    mixing_slope: float = 0.2
    cond_quantile: float = 0.0
    cond_draws: int = 25000

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SyntheticSpec:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"kind"})
        if unknown:
            raise UsageError(f"unknown synthetic data option(s): {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved_lambdas(self) -> list[float] | None:
        if self.lambdas is None:
            return None
        if isinstance(self.lambdas, str):
            return lambda_preset(self.lambdas, len(self.active_dims()))
        return [float(v) for v in self.lambdas]

    def active_dims(self) -> list[int]:
        return list(range(self.n)) if self.dims is None else [int(i) for i in self.dims]

    def validate(self) -> None:
        if self.n < 1:
            raise UsageError(f"synthetic latent dimension n must be positive, got {self.n}")
        if self.space not in SPACES:
            raise UsageError(
                f"unknown latent space {self.space!r}; choose one of {', '.join(SPACES)}"
            )
        if self.marginal not in MARGINALS:
            raise UsageError(
                f"unknown marginal {self.marginal!r}; choose one of {', '.join(MARGINALS)}"
            )
        if self.conditional not in CONDITIONALS:
            raise UsageError(
                f"unknown conditional {self.conditional!r}; choose one of {', '.join(CONDITIONALS)}"
            )
        if self.space in ("box", "sphere", "extended_sphere") and self.marginal != "uniform":
            raise UsageError(f"the {self.space} space only supports the uniform marginal")
        if self.space == "unbounded" and self.marginal == "uniform":
            raise UsageError("the unbounded space needs a normal or laplace marginal")
        if self.space in ("sphere", "extended_sphere") and self.n < 2:
            raise UsageError("sphere spaces need n >= 2")
        if self.conditional == "vmf":
            if self.space not in ("sphere", "extended_sphere"):
                raise UsageError("the vmf conditional needs a sphere space")
            if self.dims is not None:
                raise UsageError("the vmf conditional acts on all dimensions (no dims subset)")
            if self.kappa <= 0:
                raise UsageError(f"kappa must be positive, got {self.kappa}")
        dims = self.active_dims()
        if not dims or len(set(dims)) != len(dims) or min(dims) < 0 or max(dims) >= self.n:
            raise UsageError(f"dims must be distinct indices in [0, {self.n}), got {self.dims}")
        if self.conditional == "anisotropic":
            lam = self.resolved_lambdas()
            if lam is None:
                raise UsageError("the anisotropic conditional needs lambdas (a list or a preset)")
            if len(lam) != len(dims) or min(lam) <= 0:
                raise UsageError(
                    f"lambdas must be {len(dims)} positive precisions, got {len(lam)} values"
                )
        elif self.sigma <= 0:
            raise UsageError(f"sigma must be positive, got {self.sigma}")
        if self.conditional == "gennormal" and self.p <= 0:
            raise UsageError(f"the generalised normal shape p must be positive, got {self.p}")
        if self.space == "box" and not self.low < self.high:
            raise UsageError(f"box needs low < high, got [{self.low}, {self.high}]")
        if self.mixing_depth < 1:
            raise UsageError(f"mixing depth must be at least 1, got {self.mixing_depth}")


# ----------------------------------------------------------------------------- samplers


def sample_gamma(
    shape: tuple[int, ...], alpha: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Gamma(alpha, 1) draws by Marsaglia-Tsang rejection, every draw from ``generator``."""
    boost = alpha < 1.0
    a = alpha + 1.0 if boost else alpha
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    out = torch.zeros(shape, device=device)
    todo = torch.ones(shape, dtype=torch.bool, device=device)
    while bool(todo.any()):
        x = torch.randn(shape, generator=generator, device=device)
        v = (1.0 + c * x) ** 3
        u = torch.rand(shape, generator=generator, device=device)
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-30)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    if boost:
        u = torch.rand(shape, generator=generator, device=device)
        out = out * u.pow(1.0 / alpha)
    return out


def sample_uniform_sphere(
    n: int, dim: int, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    x = torch.randn(n, dim, generator=generator, device=device)
    return x / x.norm(dim=1, keepdim=True)


def sample_vmf(mu: torch.Tensor, kappa: float, generator: torch.Generator) -> torch.Tensor:
    """von Mises-Fisher draws around the unit rows of ``mu`` (Wood 1994)."""
    n, dim = mu.shape
    device = mu.device
    m1 = dim - 1.0
    b = (-2.0 * kappa + math.sqrt(4.0 * kappa**2 + m1**2)) / m1
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa * x0 + m1 * math.log(1.0 - x0**2)
    w = torch.zeros(n, device=device)
    todo = torch.ones(n, dtype=torch.bool, device=device)
    while bool(todo.any()):
        g1 = sample_gamma((n,), m1 / 2.0, generator, device)
        g2 = sample_gamma((n,), m1 / 2.0, generator, device)
        zb = g1 / (g1 + g2)
        wt = (1.0 - (1.0 + b) * zb) / (1.0 - (1.0 - b) * zb)
        u = torch.rand(n, generator=generator, device=device)
        ok = kappa * wt + m1 * torch.log(1.0 - x0 * wt) - c >= torch.log(u)
        w = torch.where(todo & ok, wt, w)
        todo = todo & ~ok
    v = torch.randn(n, dim, generator=generator, device=device)
    v = v - (v * mu).sum(1, keepdim=True) * mu
    v = v / v.norm(dim=1, keepdim=True)
    return w[:, None] * mu + torch.sqrt((1.0 - w * w).clamp_min(0.0))[:, None] * v


def _noise(
    spec: SyntheticSpec,
    shape: tuple[int, ...],
    scale: torch.Tensor | float,
    generator: torch.Generator,
    device: torch.device,
) -> torch.Tensor:
    kind = spec.conditional
    if kind in ("normal", "anisotropic"):
        return torch.randn(shape, generator=generator, device=device) * scale
    if kind == "laplace":
        u = torch.rand(shape, generator=generator, device=device) - 0.5
        return -scale * torch.sign(u) * torch.log1p(-2.0 * u.abs())
    if kind == "gennormal":
        g = sample_gamma(shape, 1.0 / spec.p, generator, device)
        sign = torch.where(torch.rand(shape, generator=generator, device=device) < 0.5, -1.0, 1.0)
        return scale * sign * g.pow(1.0 / spec.p)
    raise AssertionError(kind)


_DRAW_BATCH = 1024
_MAX_REDRAW_FACTOR = 40


@functools.lru_cache(maxsize=32)
def _mixing_weights(
    n: int, depth: int, seed: int, cond_quantile: float, cond_draws: int
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x313,)))

    def batch(k: int) -> np.ndarray:
        w = rng.uniform(-1.0, 1.0, size=(k, n, n))
        return w / np.linalg.norm(w, axis=1, keepdims=True)  # unit-norm columns

    sizes = [_DRAW_BATCH] * (cond_draws // _DRAW_BATCH) + [cond_draws % _DRAW_BATCH]
    conds = np.sort(np.concatenate([np.linalg.cond(batch(k)) for k in sizes if k]))
    threshold = conds[min(int(cond_draws * cond_quantile), cond_draws - 1)]
    weights = []
    for _ in range(depth):
        best, best_cond, tried = None, np.inf, 0
        while tried < _MAX_REDRAW_FACTOR * cond_draws:
            ws = batch(_DRAW_BATCH)
            c = np.linalg.cond(ws)
            tried += _DRAW_BATCH
            ok = np.flatnonzero(c <= threshold)
            if ok.size:
                best = ws[ok[0]]
                break
            i = int(np.argmin(c))
            if c[i] < best_cond:
                best, best_cond = ws[i], float(c[i])
        weights.append(best)
    return tuple(weights)


def draw_mixing_weights(
    n: int, depth: int = 3, seed: int = 0, cond_quantile: float = 0.0, cond_draws: int = 25000
) -> list[np.ndarray]:
    """The weight matrices of the mixing MLP, drawn from ``seed`` as the original code's
    ``construct_invertible_mlp`` does with the settings of its ``main_mlp.py``
    (``cond_thresh_ratio=0.0``, ``n_iter_cond_thresh=25000``).

    Each matrix is uniform in [-1, 1] with unit-norm columns. First ``cond_draws`` such
    matrices are drawn and their condition numbers sorted; the threshold is the one at
    index ``int(cond_draws * cond_quantile)`` (0.0: the best of the probe). Each layer's
    matrix is then redrawn until its condition number is at most the threshold. With
    quantile 0.0 the waiting time has a heavy tail, so after ``40 * cond_draws`` redraws the
    best matrix seen so far is kept (about 2-3% of layers; still deterministic in ``seed``).
    Draws are batched (``1024`` at a time; the first qualifying matrix of a batch is taken).
    This conditioning matters: with the old default (quantile 0.25 of 10,000 draws, condition
    numbers 7-16) the mixing alone scores linear R^2 0.52-0.60, with this one (condition
    numbers 3.3-4.0) 0.63-0.68, as the AnInfoNCE paper reports (0.66-0.69).
    """
    if not 0.0 <= cond_quantile <= 1.0:
        raise UsageError(f"cond_quantile must lie in [0, 1], got {cond_quantile}")
    if cond_draws < 1:
        raise UsageError(f"cond_draws must be positive, got {cond_draws}")
    return [w.copy() for w in _mixing_weights(n, depth, seed, float(cond_quantile), cond_draws)]


class Mixing(nn.Module):
    """A frozen invertible MLP: ``depth`` square linear maps with LeakyReLU between them."""

    def __init__(self, n: int, depth: int = 3, slope: float = 0.2) -> None:
        super().__init__()
        self.n, self.depth, self.slope = n, depth, slope
        self.layers = nn.ModuleList(nn.Linear(n, n, bias=False) for _ in range(depth))
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def draw(
        cls,
        n: int,
        depth: int = 3,
        seed: int = 0,
        slope: float = 0.2,
        cond_quantile: float = 0.0,
        cond_draws: int = 25000,
    ) -> Mixing:
        """Draw the weights from ``seed`` (see :func:`draw_mixing_weights`)."""
        mix = cls(n, depth, slope)
        weights = draw_mixing_weights(n, depth, seed, cond_quantile, cond_draws)
        for layer, w in zip(mix.layers, weights, strict=True):
            layer.weight.data.copy_(torch.as_tensor(w, dtype=torch.float32))
        return mix

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.depth - 1:
                x = nn.functional.leaky_relu(x, self.slope)
        return x


class SyntheticDGP:
    """A latent model plus a frozen mixing, sampled on ``device`` with seeded generators.

    ``sample(n, generator)`` -> ``(z, x)``; ``sample_pairs(n, generator)`` ->
    ``(z, z_tilde, x, x_tilde)``; ``mix(z)`` -> ``x``.
    """

    def __init__(
        self, spec: SyntheticSpec, device: torch.device | str = "cpu", mixing: Mixing | None = None
    ) -> None:
        spec.validate()
        self.spec = spec
        self.device = torch.device(device)
        self.n = spec.n
        self.dims = torch.as_tensor(spec.active_dims(), device=self.device)
        self.all_dims = spec.dims is None
        lam = spec.resolved_lambdas()
        self.lambdas = None if lam is None else torch.tensor(lam, device=self.device)
        if mixing is None:
            mixing = Mixing.draw(
                spec.n,
                spec.mixing_depth,
                spec.mixing_seed,
                spec.mixing_slope,
                spec.cond_quantile,
                spec.cond_draws,
            )
        self.mixing = mixing.to(self.device).eval()

    @property
    def true_lambdas(self) -> np.ndarray | None:
        return None if self.lambdas is None else self.lambdas.cpu().numpy()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "synthetic", **self.spec.to_dict()}

    # --- latents
    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        s, dev = self.spec, self.device
        if s.space == "box":
            u = torch.rand(n, s.n, generator=generator, device=dev)
            return s.low + (s.high - s.low) * u
        if s.space in ("sphere", "extended_sphere"):
            return sample_uniform_sphere(n, s.n, generator, dev)
        if s.marginal == "normal":
            return torch.randn(n, s.n, generator=generator, device=dev)
        u = torch.rand(n, s.n, generator=generator, device=dev) - 0.5
        return -torch.sign(u) * torch.log1p(-2.0 * u.abs())

    def _scale(self) -> torch.Tensor | float:
        if self.spec.conditional == "anisotropic":
            return self.lambdas.rsqrt()
        return self.spec.sigma

    def _perturb(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``z`` plus conditional noise on the active dims (no constraint applied)."""
        k = len(self.dims)
        d = _noise(self.spec, (z.shape[0], k), self._scale(), generator, z.device)
        if self.all_dims:
            return z + d
        out = z.clone()
        out[:, self.dims] += d
        return out

    def sample_conditional(self, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        s = self.spec
        if s.conditional == "vmf":
            return sample_vmf(z, s.kappa, generator)
        if s.space == "unbounded":
            return self._perturb(z, generator)
        if s.space == "sphere":
            zt = self._perturb(z, generator)
            return zt / zt.norm(dim=1, keepdim=True)
        if s.space == "extended_sphere":
            out = torch.empty_like(z)
            todo = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
            while bool(todo.any()):
                zt = self._perturb(z, generator)
                ok = ((zt.norm(dim=1) - 1.0).abs() < s.ext_tol) & todo
                out = torch.where(ok[:, None], zt, out)
                todo = todo & ~ok
            return out / out.norm(dim=1, keepdim=True)
        # box: per-coordinate rejection of the coordinates that left the box
        zt = self._perturb(z, generator)
        bad = (zt < s.low) | (zt > s.high)
        while bool(bad.any()):
            redraw = self._perturb(z, generator)
            zt = torch.where(bad, redraw, zt)
            bad = (zt < s.low) | (zt > s.high)
        return zt

    # --- observations
    @torch.no_grad()
    def mix(self, z: torch.Tensor) -> torch.Tensor:
        return self.mixing(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sample_latents(n, generator)
        return z, self.mix(z)

    @torch.no_grad()
    def sample_pairs(
        self, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.sample_latents(n, generator)
        zt = self.sample_conditional(z, generator)
        x = self.mix(torch.cat([z, zt]))
        return z, zt, x[:n], x[n:]


def build_dgp(
    data_cfg: dict[str, Any],
    device: torch.device | str = "cpu",
    mixing_state: dict[str, torch.Tensor] | None = None,
) -> SyntheticDGP:
    """A :class:`SyntheticDGP` from a run config's ``data`` section (``kind = synthetic``)."""
    spec = SyntheticSpec.from_dict(data_cfg)
    spec.validate()
    mixing = None
    if mixing_state is not None:
        mixing = Mixing(spec.n, spec.mixing_depth, spec.mixing_slope)
        mixing.load_state_dict(mixing_state)
    return SyntheticDGP(spec, device, mixing)
