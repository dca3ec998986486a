"""Tests of ident3d.store.format: shard names."""

from __future__ import annotations

from ident3d import store


def test_shard_names_sort_past_99999() -> None:
    assert store.shard_digits(1) == 5 and store.shard_digits(100_000) == 5
    assert store.shard_digits(100_001) == 6
    d = store.shard_digits(250_000)
    names = [store.shard_file_name(k, d) for k in (0, 9, 99_999, 100_000, 249_999)]
    assert names == sorted(names) and names[3] == "shard-100000.h5"
    assert store.shard_file_name(42) == "shard-00042.h5"
