"""The worker pool with the mock renderer: the same pixels whatever the worker count and the
sharding (two spawned worker processes on one of three "machines")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from render_helpers import _job, _read_all

from ident3d import render as R
from ident3d import store


def test_same_seed_same_pixels_whatever_workers_and_sharding(tmp_path: Path) -> None:
    a = R.render_dataset(_job(n=9), tmp_path / "a", workers=0, shard_size=9, progress=False)
    b_root = tmp_path / "b"
    for i in range(3):  # three "machines", shard groups 0/3, 1/3, 2/3; the first with two
        # worker processes, the others in-process
        R.render_dataset(
            _job(n=9),
            b_root,
            workers=2 if i == 0 else 0,
            shard_size=2,
            shard=(i, 3),
            progress=False,
            chunk=1,
        )
    assert a.complete
    assert store.read_manifest(b_root)["num_shards"] == 5
    x, y = _read_all(tmp_path / "a"), _read_all(b_root)
    assert np.array_equal(x.images, y.images)
    assert np.array_equal(x.raw, y.raw)
    # and a different seed gives different data
    R.render_dataset(_job(n=9, seed=4), tmp_path / "c", workers=0, progress=False)
    assert not np.array_equal(_read_all(tmp_path / "c").images, x.images)
