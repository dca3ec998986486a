"""The latent model: space + marginal + conditional, with block-seeded dataset sampling
(:data:`BLOCK_SIZE` samples per independently seeded block).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents.conditionals import AnyConditional, conditional_from_config, make_conditional
from ident3d.latents.marginals import Laplace, Normal, Uniform, marginal_from_config
from ident3d.latents.spaces import Space, space_from_config

#: Samples per independently seeded block in :class:`LatentModel`.
BLOCK_SIZE = 1 << 14


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
