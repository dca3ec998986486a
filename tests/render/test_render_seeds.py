"""Per-sample seeds and classes, and the shard selection (``--shard I/N``)."""

from __future__ import annotations

import numpy as np
import pytest

from ident3d import render as R
from ident3d.errors import UsageError


def test_parse_and_select_shards() -> None:
    assert R.parse_shard(None) is None
    assert R.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "x", "1/0", "1/2/3"):
        with pytest.raises(UsageError):
            R.parse_shard(bad)
    groups = [R.select_shards(10, (i, 3)) for i in range(3)]
    assert [k for g in groups for k in g] == list(range(10))
    assert [len(g) for g in groups] == [4, 3, 3]
    assert R.select_shards(2, (2, 3)) == []


def test_frame_seed_depends_only_on_seed_index_view() -> None:
    a = R.frame_seed(0, 5, 0)
    assert a == R.frame_seed(0, 5, 0)
    others = {R.frame_seed(0, 5, 1), R.frame_seed(0, 6, 0), R.frame_seed(1, 5, 0)}
    assert a not in others and len(others) == 3
    seeds = [R.frame_seed(7, i, v) for i in range(200) for v in range(2)]
    assert len(set(seeds)) == 400 and all(0 <= s < 2**31 for s in seeds)


def test_classes_do_not_depend_on_the_range() -> None:
    whole = R.sample_classes(7, 0, 40000, seed=2)
    assert set(np.unique(whole)) == set(range(7))
    part = R.sample_classes(7, 16000, 17000, seed=2)
    assert np.array_equal(part, whole[16000:17000])
    assert not np.array_equal(R.sample_classes(7, 0, 100, seed=3), whole[:100])
    assert (R.sample_classes(1, 0, 10, seed=0) == 0).all()
