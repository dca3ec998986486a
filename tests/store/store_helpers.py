"""Helpers shared by the ident3d.store tests: sample arrays, small datasets, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ident3d import store
from ident3d.cli import main

H, W = 12, 10


def _data(n: int, kind: str = "images", raw_dim: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    lead = (n,) if kind == "images" else (n, 2)
    images = rng.integers(0, 256, (*lead, H, W, 3), dtype=np.uint8)
    raw = rng.uniform(-1, 1, (*lead, raw_dim)).astype(np.float32)
    scene = rng.normal(size=(*lead, 10)).astype(np.float32)
    return images, raw, scene


def _make(root: Path, n: int = 25, shard_size: int = 10, kind: str = "images", **kw):
    images, raw, scene = _data(n, kind)
    cls = kw.pop("cls", None)
    manifest = store.create_dataset(
        root, kind, n, shard_size, H, W, 10, {"preset": "test", "seed": 1}, **kw
    )
    for k in store.missing_shards(root):
        start, count = store.shard_range(manifest, k)
        has_class = manifest["has_class"]
        with store.ShardWriter(root, k, start, count, kind, H, W, 10, has_class=has_class) as w:
            for j in range(count):
                c = None if cls is None else int(cls[start + j])
                w.write(j, images[start + j], raw[start + j], scene[start + j], cls=c)
    return images, raw, scene


def _uncommit(root: Path, indices: object) -> None:
    """Make shards look never committed: drop their manifest entries and commit records (the
    state a run killed before committing them leaves)."""
    import json

    drop = {int(k) for k in indices}  # type: ignore[attr-defined]
    m = json.loads((root / store.MANIFEST_NAME).read_text())
    m["shards"] = [e for e in m["shards"] if int(e["index"]) not in drop]
    (root / store.MANIFEST_NAME).write_text(json.dumps(m))
    for k in drop:
        (root / store.RECORDS_DIR / f"shard-{k:05d}.json").unlink(missing_ok=True)


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err
