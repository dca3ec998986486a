"""Helpers shared by the ident3d.metrics oracle tests: input kinds and random problems."""

from __future__ import annotations

import numpy as np


def _rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _structured(kind: str, n: int = 600, d: int = 5, seed: int = 0):
    """(h, z) pairs of the structured kinds the oracle tests cover."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, size=(n, d))
    if kind == "random":
        h = rng.normal(size=(n, d + 2))
    elif kind == "identity":
        h = z.copy()
    elif kind == "permutation":
        h = z[:, rng.permutation(d)] * rng.choice([-1.0, 1.0], size=d) + 0.3
    elif kind == "rotation":
        h = z @ _rotation(d, rng) + 0.05 * rng.normal(size=(n, d))
    elif kind == "warp":
        h = np.tanh(2.0 * z) + 0.2 * z**3 + 0.05 * rng.normal(size=(n, d))
    else:
        raise AssertionError(kind)
    return h, z


KINDS = ["random", "identity", "permutation", "rotation", "warp"]
