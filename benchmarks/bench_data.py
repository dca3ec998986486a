"""Benchmark the torch datasets against an original-style loader, side by side, in one run.

Measured on this machine:

1. Loading (images per second; a pair counts two images), on the same images written twice,
   as store shards and as an original-style PNG folder (``ident3d.store.export_original``):
   - original-style loaders: PIL-decoded PNGs and a standard DataLoader with torch's default
     collate; the pair loader draws ``z`` and ``z~`` per item and makes one exact
     nearest-neighbour query for each, one item at a time (brute-force L2 over the latent table,
     as the original's flat index does);
   - ``ImageDataset``, ``PairDataset`` (the same images paired up), ``KNNPairDataset`` on the
     store, and ``ImageDataset``/``KNNPairDataset`` on the PNG folder;
   each with 0, 1 and 2 DataLoader workers (``make_loader``; fork, persistent workers, three
   warm-up batches, then batches for ``--seconds``), the median of ``--rounds`` rounds that
   cycle through all cases. 0 workers is one core.
2. Pair lookups per second on a 250,000 x 10 latent table (uniform on the box), each pair being
   a k=1 query for ``z`` and a k=2 query for ``z~``: one pair at a time (brute force, like the
   original; and a k-d tree queried per pair) against the batched lookups of
   ``KNNPairDataset`` (batches of 512 pairs, one query per batch): its default ``blocks``
   backend, scipy's k-d tree, and the torch brute force of the GPU-resident path run on the CPU.
3. The distance gap of nearest-neighbour pairs (``simulate_knn``), 250,000 points in 10-D.
4. On a CUDA machine only: ``GPUDataset`` kNN pairs per second on a ``--gpu-n`` image store
   (250,000 by default, written in parallel; ``--gpu-only`` skips everything else).
5. Loading at memory speed (``--fast-only`` runs just this): random 224 px images into
   batches of ``--fast-batch``, side by side in rounds, on the store written above: the
   memcpy ceiling (the same random gather from an in-memory array into a reused batch
   buffer, numpy, one core), the PNG folder (original-style), today's path (the HDF5
   reader, fresh shared memory per worker batch, a plain DataLoader stacking item by item:
   the code before memory mapping, selected in this build by ``memory_map=False`` and
   switching the worker slots and the collate pass-through off) and the new path, each
   through ``make_loader`` and a plain ``DataLoader(ds, batch_size=B, shuffle=True)``, with
   0 (one core), 1 and 2 workers. With workers the main process copies each batch once into
   a reused buffer, as ``pin_memory=True`` does (no CUDA here to pin for). Two more ceilings:
   the same numpy gather into 2 batch buffers in turn (a training loop holds one batch while
   the loader fills the next, so a loader never refills the buffer it wrote last, which is
   still in the cache), and the page-cache copy ceiling: ``MappedReader`` gathers from the
   store into 2 buffers in turn with no sampler, dataset or loader (the least the
   memory-mapped path costs). Then section 5 runs again in a child process started with
   ``GLIBC_TUNABLES=glibc.cpu.x86_non_temporal_threshold=0x10000`` (non-temporal,
   cache-bypassing stores for copies of 64 KiB and more; glibc derives its own threshold from
   the L3 size the CPU reports) and the two are printed side by side (``--no-nt-compare``
   skips it).

Images are synthetic but render-like and smooth (a hue-coloured ground with a spotlight pool,
a shaded ellipsoid with a highlight, slight pixel noise), 224 x 224.

Run: .venv/bin/python benchmarks/bench_data.py [--n 3000] [--seconds 3] [--batch 128]
"""

from __future__ import annotations

import os

# One thread per process for every library (BLAS included), so rates are per core.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import colorsys  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ident3d import data as D  # noqa: E402
from ident3d import store  # noqa: E402
from ident3d.data.gather import MappedReader  # noqa: E402
from ident3d.data.knn import _ClassIndex, _snap  # noqa: E402
from ident3d.latents import Box, NormalConditional  # noqa: E402


def scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth 3DIdent-like frame: ground hue, spotlight pool, shaded blob, highlight."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ground = np.array(colorsys.hsv_to_rgb(rng.uniform(), 0.6, 1.0), np.float32)
    spot = np.array(colorsys.hsv_to_rgb(rng.uniform(), 0.8, 1.0), np.float32)
    obj = np.array(colorsys.hsv_to_rgb(rng.uniform(), 1.0, 1.0), np.float32)
    sx, sy = rng.uniform(0.2, 0.8, 2)
    pool = np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * rng.uniform(0.08, 0.2) ** 2))
    img = (0.15 + 0.1 * y)[..., None] * ground + 0.6 * pool[..., None] * ground * spot
    cx, cy = rng.uniform(0.3, 0.7, 2)
    rx, ry = rng.uniform(0.1, 0.25, 2)
    inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
    shade = np.clip(1 - inside, 0, 1) ** 0.5
    lit = shade[..., None] * obj * (0.4 + 0.6 * pool[..., None] * spot)
    hl = np.exp(-(((x - cx + rx / 3) ** 2 + (y - cy + ry / 3) ** 2) / (2 * (rx / 6) ** 2)))
    img = np.where((inside < 1)[..., None], lit + 0.5 * hl[..., None], img)
    img = img * 255 + rng.normal(0, 0.5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def build(work: Path, n: int, size: int, dim: int) -> tuple[Path, Path, Path]:
    """Store (images), store (pairs of the same images) and the exported PNG folder (reused
    when ``work`` already holds them for the same ``n`` and ``size``)."""
    stamp = work / f"built-{n}-{size}"
    if stamp.exists():
        return work / "images", work / "pairs", work / "original"
    for sub in ("images", "pairs", "original"):
        shutil.rmtree(work / sub, ignore_errors=True)
    rng = np.random.default_rng(0)
    images = np.stack([scene(rng, size) for _ in range(n)])
    raw = rng.uniform(-1, 1, (n, dim)).astype(np.float32)
    roots = []
    for kind in ("images", "pairs"):
        root = work / kind
        m = n if kind == "images" else n // 2
        imgs = images if kind == "images" else images[: 2 * m].reshape(m, 2, size, size, 3)
        lat = raw if kind == "images" else raw[: 2 * m].reshape(m, 2, dim)
        manifest = store.create_dataset(root, kind, m, 1000, size, size, dim, config={"bench": 1})
        for k in range(manifest["num_shards"]):
            a, c = store.shard_range(manifest, k)
            with store.ShardWriter(root, k, a, c, kind, size, size, dim) as w:
                scn = np.zeros((c, 10) if kind == "images" else (c, 2, 10), np.float32)
                w.write_batch(0, imgs[a : a + c], lat[a : a + c], scn)
        roots.append(root)
    folder = store.export_original(roots[0], work / "original", workers=2, progress=False)
    stamp.touch()
    return roots[0], roots[1], Path(folder)


# ----------------------------------------------------------------------------- original style


def brute_force(table: np.ndarray, sqnorm: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """One exact L2 query over the whole table (what a flat index does per query)."""
    d = sqnorm - 2.0 * (table @ q)
    idx = np.argpartition(d, k - 1)[:k] if k < len(d) else np.arange(len(d))
    return idx[np.argsort(d[idx])]


class OriginalImages(torch.utils.data.Dataset):
    """Original-style sequential loader: PIL-decoded PNG + the latents row per item."""

    def __init__(self, root: Path) -> None:
        self.latents = np.load(root / "raw_latents.npy")
        digits = store.index_digits(len(self.latents))
        self.paths = [
            str(root / "images" / f"{i:0{digits}d}.png") for i in range(len(self.latents))
        ]

    def __len__(self) -> int:
        return len(self.paths)

    @staticmethod
    def load(path: str) -> torch.Tensor:
        with open(path, "rb") as fh, Image.open(fh) as im:
            return torch.from_numpy(np.asarray(im.convert("RGB"))).permute(2, 0, 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.load(self.paths[i]), torch.from_numpy(self.latents[i])


class OriginalPairs(OriginalImages):
    """Original-style kNN pairs: per item, draw z and z~, one exact query each, two PNGs."""

    def __init__(self, root: Path, sigma: float = 0.1) -> None:
        super().__init__(root)
        self.table = self.latents.astype(np.float32)
        self.sqnorm = (self.table.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self.space = Box(self.table.shape[1])
        self.cond = NormalConditional(sigma=sigma)
        self.rng = np.random.default_rng(0)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        z = self.rng.uniform(-1, 1, (1, self.table.shape[1]))
        zt = self.cond.sample(z, self.space, self.rng)
        a = int(brute_force(self.table, self.sqnorm, z[0].astype(np.float32), 1)[0])
        two = brute_force(self.table, self.sqnorm, zt[0].astype(np.float32), 2)
        b = int(two[0] if two[0] != a else two[1])
        return (self.load(self.paths[a]), self.load(self.paths[b]),
                torch.from_numpy(self.table[a]), torch.from_numpy(self.table[b]))  # fmt: skip


# ----------------------------------------------------------------------------- timing


def throughput(loader: Any, per_item: int, seconds: float, warm: int = 3) -> tuple[float, float]:
    """Images per wall-clock second over ``seconds`` of batches, after ``warm`` warm-up batches
    (workers started, index built; epochs restart as needed), and images per CPU second of
    this process (meaningful with 0 workers: the per-core rate, whatever else the machine
    runs)."""
    it = iter(loader)
    for _ in range(warm):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
    count, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        count += len(batch[0]) * per_item
    rate = count / (time.perf_counter() - t0)
    cpu_rate = count / max(time.process_time() - c0, 1e-9)
    del it
    return rate, cpu_rate


def loaders(name: str, ds: Any, workers: int, batch: int) -> Any:
    kw: dict[str, Any] = {}
    if workers:
        kw = {"persistent_workers": True, "multiprocessing_context": "fork", "num_workers": workers}
    if name.startswith("original"):
        return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, **kw)
    return D.make_loader(ds, batch, shuffle=True, seed=0, **kw)


def bench_loading(
    roots: tuple[Path, Path, Path], batch: int, seconds: float, rounds: int
) -> dict[str, dict[Any, float]]:
    """Median over ``rounds`` rounds; within a round the cases run one after the other, so a
    change in the machine's load affects all of them alike."""
    img_root, pair_root, folder = roots
    cases = [
        ("original-style images (PNG)", lambda: OriginalImages(folder), 1),
        ("original-style kNN pairs (PNG + 1 query/item)", lambda: OriginalPairs(folder), 2),
        ("ImageDataset, store", lambda: D.ImageDataset(img_root), 1),
        ("PairDataset, store", lambda: D.PairDataset(pair_root), 2),
        ("KNNPairDataset, store", lambda: D.KNNPairDataset(img_root, sigma=0.1), 2),
        ("ImageDataset, PNG folder", lambda: D.ImageDataset(folder), 1),
        ("KNNPairDataset, PNG folder", lambda: D.KNNPairDataset(folder, sigma=0.1), 2),
    ]
    samples: dict[str, dict[Any, list[float]]] = {
        n: {0: [], 1: [], 2: [], "cpu": []} for n, _, _ in cases
    }
    for r in range(rounds):
        for workers in (0, 1, 2):
            for name, make, per in cases:
                loader = loaders(name, make(), workers, batch)
                wall, cpu = throughput(loader, per, seconds)
                samples[name][workers].append(wall)
                if workers == 0:
                    samples[name]["cpu"].append(cpu)
                del loader
            print(f"  round {r + 1}/{rounds}, {workers} workers: " + ", ".join(
                f"{samples[n][workers][-1]:.0f}" for n, _, _ in cases), flush=True)  # fmt: skip
    return {n: {w: float(np.median(v)) for w, v in row.items()} for n, row in samples.items()}


# ----------------------------------------------------------------------------- memory speed


class _Legacy:
    """Today's path (before memory mapping) in this build: the HDF5 reader per item, a fresh
    shared-memory buffer per worker batch, items that torch's default collate stacks."""

    def __enter__(self) -> None:
        from torch.utils.data._utils.collate import default_collate_fn_map

        from ident3d.data import buffers

        self.slots = buffers._WORKER_SLOTS
        buffers._WORKER_SLOTS = 0
        self.entry = default_collate_fn_map.pop(buffers._Item)

    def __exit__(self, *exc: object) -> None:
        from torch.utils.data._utils.collate import default_collate_fn_map

        from ident3d.data import buffers

        buffers._WORKER_SLOTS = self.slots
        default_collate_fn_map[buffers._Item] = self.entry


def memcpy_ceiling(
    n: int, size: int, batch: int, seconds: float, buffers: int = 1
) -> tuple[float, float]:
    """Images/s of the bare copy: random images of an ``n``-image in-memory array gathered
    into ``buffers`` reused batch buffers in turn (what a loader cannot beat on this machine;
    with 2 the batch being filled is never the one written last, as in a loop that holds one
    batch while the loader fills the next)."""
    src = np.ones((n, size, size, 3), np.uint8)
    dsts = [np.ones((batch, size, size, 3), np.uint8) for _ in range(buffers)]  # touched
    rng = np.random.default_rng(0)
    count, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        dst = dsts[(count // batch) % buffers]
        for b, i in enumerate(rng.integers(0, n, batch).tolist()):
            np.copyto(dst[b], src[i])
        count += batch
    return count / (time.perf_counter() - t0), count / max(time.process_time() - c0, 1e-9)


def mapped_ceiling(root: Path, batch: int, seconds: float) -> tuple[float, float]:
    """Images/s of the bare copy from the page cache: :class:`MappedReader` gathers of random
    batches of the store into 2 reused batch buffers in turn, with no sampler, dataset or
    loader around it (what the memory-mapped path costs at the least)."""
    reader = MappedReader(store.open_dataset(root))
    n = len(reader.ds)
    dsts = [np.ones((batch, *reader.sample_shape), np.uint8) for _ in range(2)]
    rng = np.random.default_rng(0)
    for s in range(0, n - batch + 1, batch):  # map every page once, as a loader's epoch does
        reader.read_many_into(np.arange(s, s + batch), dsts[0])
    count, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        reader.read_many_into(rng.integers(0, n, batch), dsts[(count // batch) % 2])
        count += batch
    return count / (time.perf_counter() - t0), count / max(time.process_time() - c0, 1e-9)


def _consume(loader: Any) -> Any:
    """Batches of ``loader``, each copied once into a reused buffer (what ``pin_memory`` does
    with a batch that a worker sent)."""
    sink: dict[tuple[int, ...], torch.Tensor] = {}
    for batch in loader:
        x = batch[0]
        buf = sink.get(tuple(x.shape))
        if buf is None:
            buf = sink[tuple(x.shape)] = torch.empty_like(x)
        buf.copy_(x)
        yield batch


class _Consumed:
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __iter__(self) -> Any:
        return _consume(self.loader)


CEILING = "memcpy ceiling (numpy gather, one core)"
CEILING_2 = "memcpy ceiling, 2 batch buffers in turn"
CEILING_MAPPED = "page-cache copy ceiling (MappedReader, 2 buffers)"
# glibc picks non-temporal (cache-bypassing) stores only for copies above this threshold,
# which it derives from the L3 size the CPU reports; section 5 is also run with it lowered.
NT_TUNABLE = "glibc.cpu.x86_non_temporal_threshold=0x10000"


def bench_fast(
    roots: tuple[Path, Path, Path], n: int, size: int, batch: int, seconds: float, rounds: int
) -> dict[str, dict[Any, float]]:
    img_root, _, folder = roots
    plain_kw = {"batch_size": batch, "shuffle": True}

    def plain(ds: Any, w: int) -> Any:
        kw = dict(plain_kw, num_workers=w)
        if w:
            kw.update(persistent_workers=True, multiprocessing_context="fork")
        return torch.utils.data.DataLoader(ds, **kw)

    def made(ds: Any, w: int, **extra: Any) -> Any:
        kw: dict[str, Any] = {"num_workers": w, **extra}
        if w:
            kw.update(persistent_workers=True, multiprocessing_context="fork")
        return D.make_loader(ds, batch, shuffle=True, seed=0, **kw)

    legacy = _Legacy()
    cases: list[tuple[str, Any, bool]] = [
        ("PNG folder (original-style, DataLoader)", lambda w: plain(OriginalImages(folder), w), False),
        ("today's path, make_loader", lambda w: made(D.ImageDataset(img_root, memory_map=False), w), True),
        ("today's path, plain DataLoader", lambda w: plain(D.ImageDataset(img_root, memory_map=False), w), True),
        ("new path, make_loader", lambda w: made(D.ImageDataset(img_root), w), False),
        ("new path, plain DataLoader", lambda w: plain(D.ImageDataset(img_root), w), False),
        ("new path, make_loader, block_size=32", lambda w: made(D.ImageDataset(img_root), w, block_size=32), False),
    ]  # fmt: skip
    ceilings: dict[str, Any] = {
        CEILING: lambda: memcpy_ceiling(n, size, batch, seconds),
        CEILING_2: lambda: memcpy_ceiling(n, size, batch, seconds, buffers=2),
        CEILING_MAPPED: lambda: mapped_ceiling(img_root, batch, seconds),
    }
    samples: dict[str, dict[Any, list[float]]] = {
        name: {0: [], 1: [], 2: [], "cpu": []} for name in [*ceilings, *(c[0] for c in cases)]
    }
    for r in range(rounds):
        for name_mem, measure in ceilings.items():
            wall, cpu = measure()
            samples[name_mem][0].append(wall)
            samples[name_mem]["cpu"].append(cpu)
        for workers in (0, 1, 2):
            for name, make, old in cases:
                if old:
                    legacy.__enter__()
                try:
                    loader = make(workers)
                    if workers:
                        loader = _Consumed(loader)
                    wall, cpu = throughput(loader, 1, seconds)
                    del loader
                finally:
                    if old:
                        legacy.__exit__()
                samples[name][workers].append(wall)
                if workers == 0:
                    samples[name]["cpu"].append(cpu)
            print(f"  round {r + 1}/{rounds}, {workers} workers: " + ", ".join(
                f"{samples[c[0]][workers][-1]:.0f}" for c in cases), flush=True)  # fmt: skip
    return {
        name: {w: float(np.median(v)) if v else float("nan") for w, v in row.items()}
        for name, row in samples.items()
    }


def report_fast(fast: dict[str, dict[Any, float]], batch: int) -> None:
    print(f"\nloading at memory speed: random 224 px images, batch {batch}, images/s "
          "(median of rounds; 0 workers = one core; with workers the main process copies "
          "each batch once)")  # fmt: skip
    print("\n| loader | 0 workers | per CPU-second (0 workers) | 1 worker | 2 workers |")
    print("|---|---|---|---|---|")

    def f(v: float) -> str:
        return "-" if v != v else f"{v:,.0f}"

    for name, row in fast.items():
        print(f"| {name} | {f(row[0])} | {f(row['cpu'])} | {f(row[1])} | {f(row[2])} |")
    png = fast["PNG folder (original-style, DataLoader)"]
    mem, mem2 = fast[CEILING]["cpu"], fast[CEILING_MAPPED]["cpu"]
    print("\nagainst the PNG folder (same worker count) and the ceilings (per CPU-second):")
    for name, row in fast.items():
        if name.startswith(("PNG", "memcpy", "page-cache")):
            continue
        r = [row[w] / png[w] for w in ("cpu", 0, 1, 2)]
        print(f"  {name:40s} per CPU-second {r[0]:5.1f}x  0 workers {r[1]:5.1f}x  "
              f"1 worker {r[2]:5.1f}x  2 workers {r[3]:5.1f}x;  "
              f"{100 * row['cpu'] / mem:.0f}% of the memcpy ceiling, "
              f"{100 * row['cpu'] / mem2:.0f}% of the page-cache copy ceiling")  # fmt: skip
    for name in ("make_loader", "plain DataLoader"):
        new, old = fast[f"new path, {name}"], fast[f"today's path, {name}"]
        print(f"  new / today's path, {name}: per CPU-second {new['cpu'] / old['cpu']:.1f}x, "
              + ", ".join(f"{w} workers {new[w] / old[w]:.1f}x" for w in (0, 1, 2)))  # fmt: skip


def bench_lookups(n_table: int, dim: int, seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(1)
    table = rng.uniform(-1, 1, (n_table, dim)).astype(np.float32)
    sqnorm = (table.astype(np.float64) ** 2).sum(1).astype(np.float32)
    space, cond = Box(dim), NormalConditional(sigma=0.1)
    z = rng.uniform(-1, 1, (20_000, dim))
    zt = cond.sample(z, space, rng)
    out: dict[str, float] = {}

    cpu: dict[str, float] = {}

    def run(fn: Any, per_call: int) -> tuple[float, float]:
        count, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            fn(count % (len(z) - per_call))
            count += per_call
        return count / (time.perf_counter() - t0), count / max(time.process_time() - c0, 1e-9)

    def one_brute(s: int) -> None:
        a = brute_force(table, sqnorm, z[s].astype(np.float32), 1)[0]
        two = brute_force(table, sqnorm, zt[s].astype(np.float32), 2)
        _ = two[0] if two[0] != a else two[1]

    key = "one at a time, brute force (original style)"
    out[key], cpu[key] = run(one_brute, 1)
    index = _ClassIndex(table, None, "kdtree", None, 1)
    index.query(z[:10], 1, None)  # build the tree outside the timing
    tree = index.groups[0][2]._tree

    def one_tree(s: int) -> None:
        _, a = tree.query(z[s], k=1)
        _, two = tree.query(zt[s], k=2)
        _ = two[0] if two[0] != a else two[1]

    key = "one at a time, k-d tree"
    out[key], cpu[key] = run(one_tree, 1)
    for backend, label in (("blocks", "blocks (KNNPairDataset default)"), ("kdtree", "k-d tree"),
                           ("torch", "torch brute force on the CPU")):  # fmt: skip
        idx = _ClassIndex(table, None, backend, "cpu", 1)
        _snap(idx, z[:8], zt[:8], None, None)  # build outside the timing

        def batched(s: int, idx: Any = idx) -> None:
            _snap(idx, z[s : s + 512], zt[s : s + 512], None, None)

        key = f"batched (512), {label}"
        out[key], cpu[key] = run(batched, 512)
    for k, v in out.items():
        print(f"  {k:48s} {v:9.0f} pairs/s, {cpu[k]:9.0f} per CPU-second", flush=True)
    return {"wall": out, "cpu": cpu}


def _write_large_shard(task: tuple[str, int, int, int]) -> int:
    root, k, size, dim = task
    manifest = store.read_manifest(root)
    a, c = store.shard_range(manifest, k)
    rng = np.random.default_rng(k)
    images = np.empty((c, size, size, 3), np.uint8)
    images[:] = scene(rng, size)  # one scene per shard, tagged per image below
    images[:, 0, 0, 0] = np.arange(a, a + c) % 256
    raw = rng.uniform(-1, 1, (c, dim)).astype(np.float32)
    with store.ShardWriter(root, k, a, c, "images", size, size, dim) as w:
        w.write_batch(0, images, raw, np.zeros((c, 10), np.float32))
    return c


def build_large(work: Path, n: int, size: int, dim: int) -> Path:
    """A store of ``n`` images (latents uniform on the box) for the GPU-resident measurement,
    shards written in parallel (one process per core)."""
    import multiprocessing as mp

    root = work / f"large-{n}-{size}"
    if (root / "manifest.json").exists() and not store.missing_shards(root):
        return root
    manifest = store.create_dataset(root, "images", n, 1000, size, size, dim,
                                    config={"bench": "gpu"}, overwrite=True)  # fmt: skip
    tasks = [(str(root), k, size, dim) for k in range(manifest["num_shards"])]
    with mp.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        sum(pool.imap_unordered(_write_large_shard, tasks))
    return root


def bench_gpu(root: Path, seconds: float) -> dict[str, float] | None:
    """``GPUDataset`` kNN pairs per second (images and lookups on the device, normalised to
    bfloat16), and the device lookups alone; None without CUDA."""
    if not torch.cuda.is_available():
        return None
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    g = D.load_to_device(root, "cuda", mode="knn", sigma=0.1)
    torch.cuda.synchronize()
    out["load_to_device seconds"] = time.perf_counter() - t0
    out["images on the device"] = float(len(g))
    out["GB on the device"] = g.images.numel() / 1e9
    norm = g.normalizer(torch.bfloat16)
    for b in (512, 2048):
        it = g.batches(b, epoch=0)
        for _ in range(3):  # warm-up (kernels, the epoch's draws)
            x, xt, *_ = next(it)
            norm(x), norm(xt)
        torch.cuda.synchronize()
        count, epoch, t0 = 0, 1, time.perf_counter()
        it = g.batches(b, epoch=epoch)
        while time.perf_counter() - t0 < seconds:
            try:
                x, xt, *_ = next(it)
            except StopIteration:
                epoch += 1
                it = g.batches(b, epoch=epoch)
                continue
            norm(x), norm(xt)
            count += len(x)
        torch.cuda.synchronize()
        out[f"GPUDataset kNN pairs/s, batch {b} (x and x~ normalised to bf16)"] = count / (
            time.perf_counter() - t0
        )
    nn = D.NearestNeighbours(g.latents, "torch", "cuda")
    q = torch.rand(512, g.latents.shape[1], device="cuda", dtype=torch.float64) * 2 - 1
    nn.query(q, 2)
    torch.cuda.synchronize()
    t0, reps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        nn.query(q, 1), nn.query(q, 2)
        reps += 1
    torch.cuda.synchronize()
    out[f"device lookups alone, {len(g):,}-row table, batch 512 (pairs/s)"] = (
        reps * 512 / (time.perf_counter() - t0)
    )
    for k, v in out.items():
        print(f"  {k}: {v:,.2f}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=3000, help="images in the benchmark dataset")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per case")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the loading cases (median)")
    p.add_argument("--table", type=int, default=250_000, help="latent table rows for lookups")
    p.add_argument("--workdir", type=Path, default=None, help="where to write the datasets")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--gpu-n", type=int, default=250_000,
                   help="images in the store for the GPU-resident measurement (CUDA only)")  # fmt: skip
    p.add_argument("--gpu-only", action="store_true", help="only the GPU-resident measurement")
    p.add_argument("--fast-only", action="store_true", help="only loading at memory speed (5.)")
    p.add_argument("--fast-batch", type=int, default=256, help="batch size of section 5")
    p.add_argument(
        "--no-nt-compare",
        action="store_true",
        help=f"skip section 5's second run with GLIBC_TUNABLES={NT_TUNABLE}",
    )
    p.add_argument("--nt-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")  # fmt: skip
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-data-"))
    results: dict[str, Any] = {"n": args.n, "size": args.size, "batch": args.batch}
    if args.gpu_only:
        if not torch.cuda.is_available():
            print("GPU-resident path: not measured (no CUDA device on this machine).")
            return
        try:
            t0 = time.perf_counter()
            large = build_large(work, args.gpu_n, args.size, 10)
            print(f"built {args.gpu_n:,} images of {args.size}x{args.size} in "
                  f"{time.perf_counter() - t0:.0f} s; GPU: {torch.cuda.get_device_name()}")  # fmt: skip
            results["gpu"] = bench_gpu(large, args.seconds)
        finally:
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        return
    if args.fast_only:
        try:
            roots = build(work, args.n, args.size, 10)
            print(f"loading at memory speed, {args.n} images, images/s (0 workers = one core):")
            fast = bench_fast(roots, args.n, args.size, args.fast_batch, args.seconds, args.rounds)
            fast_nt = None if args.nt_child or args.no_nt_compare else fast_tunable(work, args)
        finally:
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)
        report_fast(fast, args.fast_batch)
        report_tunable(fast, fast_nt)
        if not args.nt_child:
            _gpu_feed_note()
        if args.json is not None:
            args.json.write_text(
                json.dumps({**results, "fast": fast, "fast_nt": fast_nt}, indent=1, default=str)
                + "\n"
            )
        return
    try:
        t0 = time.perf_counter()
        roots = build(work, args.n, args.size, 10)
        print(f"built {args.n} images of {args.size}x{args.size} (store + PNG folder) in "
              f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        print(f"loading at memory speed, images/s, batch {args.fast_batch}:")
        fast = bench_fast(roots, args.n, args.size, args.fast_batch, args.seconds, args.rounds)
        results["fast"] = fast
        fast_nt = None if args.no_nt_compare else fast_tunable(work, args)
        results["fast_nt"] = fast_nt
        print("loading, images/s (0 workers = one core):")
        load = bench_loading(roots, args.batch, args.seconds, args.rounds)
        results["loading"] = load
        print(f"pair lookups on a {args.table:,} x 10 table, pairs/s (one core):")
        look = bench_lookups(args.table, 10, args.seconds)
        results["lookups"] = look
        sim = D.simulate_knn(n_stored=args.table, dim=10, n_pairs=5000, sigma=0.1, seed=0)
        results["knn_gap"] = sim
        gpu = None
        if torch.cuda.is_available():
            print(f"GPU-resident path, {args.gpu_n:,} images:")
            gpu = bench_gpu(build_large(work, args.gpu_n, args.size, 10), args.seconds)
        results["gpu"] = gpu
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)

    print("\nimages/s, wall clock (median of rounds); last column: per CPU second, 0 workers")
    print("\n| loader | 0 workers | 1 worker | 2 workers | per CPU-second (0 workers) |")
    print("|---|---|---|---|---|")
    for name, row in load.items():
        print(f"| {name} | {row[0]:,.0f} | {row[1]:,.0f} | {row[2]:,.0f} | {row['cpu']:,.0f} |")
    base_img = load["original-style images (PNG)"]
    base_pair = load["original-style kNN pairs (PNG + 1 query/item)"]
    print("\nratios against the original-style loaders (same worker count):")
    for name, base in (("ImageDataset, store", base_img), ("PairDataset, store", base_pair),
                       ("KNNPairDataset, store", base_pair)):  # fmt: skip
        r = [load[name][w] / base[w] for w in ("cpu", 0, 1, 2)]
        print(f"  {name:24s} per CPU-second {r[0]:6.1f}x   0 workers {r[1]:6.1f}x   "
              f"1 worker {r[2]:6.1f}x   2 workers {r[3]:6.1f}x")  # fmt: skip
    print("\n| lookup | pairs/s | pairs per CPU-second |")
    print("|---|---|---|")
    for k, v in look["wall"].items():
        print(f"| {k} | {v:,.0f} | {look['cpu'][k]:,.0f} |")
    for unit in ("wall", "cpu"):
        t = look[unit]
        b = t["batched (512), blocks (KNNPairDataset default)"]
        print(f"batched / one at a time ({unit}): "
              f"{b / t['one at a time, brute force (original style)']:.1f}x against the "
              f"original-style brute force, {b / t['one at a time, k-d tree']:.1f}x against "
              f"per-pair k-d tree queries")  # fmt: skip
    print(f"\nkNN gap ({sim['stored']:,} uniform points in 10-D, sigma 0.1, {sim['pairs']:,} pairs): "
          f"sampled {sim['sampled_distance_mean']:.3f}, retrieved {sim['retrieved_distance_mean']:.3f} "
          f"apart on average; {100 * sim['second_neighbour_fraction']:.1f}% second-neighbour fallbacks")  # fmt: skip
    report_fast(fast, args.fast_batch)
    report_tunable(fast, fast_nt)
    _gpu_feed_note()
    if gpu is None:
        print("\nGPU-resident path: not measured (no CUDA device on this machine).")
    else:
        print(f"\nGPU-resident path ({torch.cuda.get_device_name()}):")
        for k, v in gpu.items():
            print(f"  {k}: {v:,.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")


def fast_tunable(work: Path, args: argparse.Namespace) -> dict[str, dict[str, float]] | None:
    """Section 5 again, in a child process started with ``GLIBC_TUNABLES`` lowering glibc's
    non-temporal threshold (glibc reads tunables only at process start), on the same store."""
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), NT_TUNABLE)))
    out = work / "fast-nt.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--fast-only", "--nt-child",
           "--workdir", str(work), "--json", str(out), "--n", str(args.n), "--size",
           str(args.size), "--fast-batch", str(args.fast_batch), "--seconds",
           str(args.seconds), "--rounds", str(args.rounds)]  # fmt: skip
    print(f"section 5 again with GLIBC_TUNABLES={NT_TUNABLE} (child process):", flush=True)
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        print(f"  the child run failed (exit {done.returncode}); not compared")
        return None
    for line in done.stdout.splitlines():
        if line.startswith("  round "):
            print(line)
    return json.loads(out.read_text())["fast"]


def report_tunable(fast: dict[str, Any], fast_nt: dict[str, Any] | None) -> None:
    if fast_nt is None:
        return
    print(f"\nper CPU-second (0 workers), glibc's default against GLIBC_TUNABLES={NT_TUNABLE} "
          "(non-temporal stores for copies of 64 KiB and more):")  # fmt: skip
    print("\n| loader | default | non-temporal >= 64 KiB | ratio | 1 / 2 workers, default "
          "| 1 / 2 workers, non-temporal |")  # fmt: skip
    print("|---|---|---|---|---|---|")

    def w(row: dict[Any, float]) -> str:
        v = [row.get(k, row.get(str(k), float("nan"))) for k in (1, 2)]
        return " / ".join("-" if x != x else f"{x:,.0f}" for x in v)

    for name, row in fast.items():
        a, b = row["cpu"], fast_nt[name]["cpu"]
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f}x | {w(row)} | {w(fast_nt[name])} |")


def _gpu_feed_note() -> None:
    if not torch.cuda.is_available():
        print("\nGPU feed (ResNet18 training through the DataLoader path against synthetic "
              "tensors): not measured, no CUDA device on this machine; "
              "benchmarks/bench_train.py measures it where there is one.")  # fmt: skip


if __name__ == "__main__":
    main()
