"""Tests of ident3d.metrics.blocks."""

from __future__ import annotations

import numpy as np
import pytest
from metrics_helpers import _rotation

from ident3d.errors import UsageError
from ident3d.metrics import (
    block_r2,
    linear_r2,
)


def test_block_r2_content_vs_style():
    rng = np.random.default_rng(8)
    z = rng.uniform(-1, 1, size=(800, 5))
    h = np.concatenate([z[:, :3] @ _rotation(3, rng), rng.normal(size=(800, 2))], axis=1)
    res = block_r2(h, z, {"content": [0, 1, 2], "style": [3, 4]})
    assert res.blocks["content"]["r2"] > 0.999 and res.blocks["style"]["r2"] < 0.05
    lin = linear_r2(h, z)
    assert res.blocks["style"]["per_factor"] == lin.per_factor[3:]
    assert res.blocks["content"]["r2"] == pytest.approx(np.mean(lin.per_factor[:3]))
    # restricted to the style part of the encoding: nothing is predicted
    sub = block_r2(h, z, {"content": [0, 1, 2]}, encoding_dims=[3, 4])
    assert sub.blocks["content"]["r2"] < 0.05 and sub.encoding_dims == [3, 4]
    ker = block_r2(h[:400], z[:400], {"content": [0, 1]}, method="kernel", n_fit=280)
    assert ker.blocks["content"]["r2"] > 0.95 and ker.method == "kernel"
    assert set(res.to_dict()) == {"method", "blocks", "encoding_dims", "protocol"}
    with pytest.raises(UsageError, match="block 'x'"):
        block_r2(h, z, {"x": [7]})
    with pytest.raises(UsageError, match="encoding_dims"):
        block_r2(h, z, {"x": [0]}, encoding_dims=[9])
