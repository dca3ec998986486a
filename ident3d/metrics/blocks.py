"""Block identifiability: :func:`block_r2`, R^2 of predicting groups of factors (e.g. content
vs style).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.metrics.common import ArrayLike, _pair
from ident3d.metrics.kernel import kernel_r2
from ident3d.metrics.linear import linear_r2


@dataclass
class BlockR2Result:
    """R^2 of predicting each named group of factors (mean over the group's factors)."""

    method: str
    blocks: dict[str, dict[str, Any]]
    encoding_dims: list[int] | None
    protocol: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def block_r2(
    h: ArrayLike,
    z: ArrayLike,
    blocks: Mapping[str, Sequence[int]],
    method: str = "linear",
    encoding_dims: Sequence[int] | None = None,
    **kwargs: Any,
) -> BlockR2Result:
    """Block identifiability: how well each group of factors is predicted from the encoding.

    ``blocks`` maps a name to factor columns (e.g. ``{"content": [0, 1, 2], "style": [3,
    4]}``). ``encoding_dims`` restricts the encoding to some of its dimensions (e.g. the content
    part of a representation, expected to predict content well and style badly). ``method`` is
    ``"linear"`` (:func:`linear_r2`) or ``"kernel"`` (:func:`kernel_r2`); ``kwargs`` go to it.
    A block's score is the mean R^2 of its factors (scikit-learn's ``uniform_average``).
    """
    if method not in ("linear", "kernel"):
        raise UsageError(f"unknown block method {method!r} (use 'linear' or 'kernel').")
    ht, zt = _pair(h, z, kwargs.get("device"))
    d_h, d_z = ht.shape[1], zt.shape[1]
    if not blocks:
        raise UsageError("no factor blocks given.")
    for name, cols in blocks.items():
        if not cols or any(not 0 <= int(c) < d_z for c in cols):
            raise UsageError(
                f"block {name!r} must list factor columns in 0..{d_z - 1}, got {cols}."
            )
    if encoding_dims is not None:
        if not encoding_dims or any(not 0 <= int(c) < d_h for c in encoding_dims):
            raise UsageError(f"encoding_dims must lie in 0..{d_h - 1}, got {list(encoding_dims)}.")
        ht = ht[:, [int(c) for c in encoding_dims]]
    used = sorted({int(c) for cols in blocks.values() for c in cols})
    fn = linear_r2 if method == "linear" else kernel_r2
    res = fn(ht, zt[:, used], **kwargs)
    per = dict(zip(used, res.per_factor, strict=True))
    out = {
        name: {
            "factors": [int(c) for c in cols],
            "r2": float(np.mean([per[int(c)] for c in cols])),
            "per_factor": [per[int(c)] for c in cols],
        }
        for name, cols in blocks.items()
    }
    return BlockR2Result(
        method=method,
        blocks=out,
        encoding_dims=None if encoding_dims is None else [int(c) for c in encoding_dims],
        protocol=res.protocol,
    )
