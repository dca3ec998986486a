"""Per-sample seeds and classes, and which shards a machine renders (``--shard I/N``)."""

from __future__ import annotations

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents import BLOCK_SIZE

_CLASS_STREAM = 0x636C6173  # "clas": the object-class stream's own entropy word
_SEED_STREAM = 0x73656564  # "seed": the Cycles-seed stream's own entropy word


def frame_seed(seed: int, index: int, view: int = 0) -> int:
    """The Cycles seed of view ``view`` (0 or 1) of sample ``index``: a 31-bit integer derived
    from the global seed and the sample index only."""
    ss = np.random.SeedSequence([_SEED_STREAM, int(seed), int(index), int(view)])
    return int(ss.generate_state(1, np.uint32)[0] & 0x7FFFFFFF)


def sample_classes(n_classes: int, start: int, stop: int, seed: int) -> np.ndarray:
    """Object classes of samples ``start:stop`` (uniform over ``n_classes``), block-seeded like
    the latents so sample ``i``'s class does not depend on the range it is drawn in."""
    out = np.zeros(stop - start, np.int64)
    if n_classes <= 1:
        return out
    for b in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
        rng = np.random.default_rng(
            np.random.SeedSequence([_CLASS_STREAM, int(seed)], spawn_key=(b,))
        )
        blk = rng.integers(0, n_classes, BLOCK_SIZE)
        lo, hi = max(start, b * BLOCK_SIZE), min(stop, (b + 1) * BLOCK_SIZE)
        out[lo - start : hi - start] = blk[lo - b * BLOCK_SIZE : hi - b * BLOCK_SIZE]
    return out


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``None`` stays ``None``."""
    if spec is None:
        return None
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise UsageError(f"--shard must look like I/N (e.g. 0/4), got {spec!r}.") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {spec}: need 0 <= I < N.")
    return i, n


def select_shards(num_shards: int, shard: tuple[int, int] | None) -> list[int]:
    """Store shards handled by ``--shard I/N``: the I-th of N contiguous groups."""
    if shard is None:
        return list(range(num_shards))
    i, n = shard
    # The groups of np.array_split(range(num_shards), n), without building that array.
    size, extra = divmod(num_shards, n)
    lo = i * size + min(i, extra)
    return list(range(lo, lo + size + (1 if i < extra else 0)))
