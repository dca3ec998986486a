"""Benchmark the dataset store against the original PNG-folder layout, side by side.

Measures, on this machine, in one process (one core):
- random-access reads of single samples (images + latents) from the store, for each
  compression, and from a PNG folder holding the same images (PIL decode + a latents row);
- bytes per image on disk for each compression and for the PNG folder;
- write throughput through ShardWriter (compression, SHA-256, manifest commit included), and
  the throughput of `ident3d convert` and `ident3d export` with one worker per core.

Images are synthetic but render-like (not noise, which does not compress): a ground plane
coloured by a hue with a spotlight falloff, a shaded ellipsoid "object" with a specular
highlight, plus Gaussian pixel noise: sigma 0.5 ("smooth", like a denoised high-sample render,
the original 3DIdent settings) for the read timings, and sigma 0.5 and 3 ("noisy", like a
low-sample render without denoising) for the sizes. All files are read once before timing
(warm page cache) for every layout.

Run: .venv/bin/python benchmarks/bench_store.py [--n 2000] [--reads 4000] [--size 224]
"""

from __future__ import annotations

import argparse
import colorsys
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ident3d import store


def render_like(rng: np.random.Generator, size: int, noise: float) -> np.ndarray:
    """One 3DIdent-looking frame: ground hue + spotlight pool + shaded blob + pixel noise."""
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
    mask = inside < 1
    shade = np.clip(1 - inside, 0, 1) ** 0.5 * (0.4 + 0.6 * (1 - (y - cy + ry) / (2 * ry)))
    lit = shade[..., None] * obj * (0.4 + 0.6 * pool[..., None] * spot)
    hl = np.exp(-(((x - cx + rx / 3) ** 2 + (y - cy + ry / 3) ** 2) / (2 * (rx / 6) ** 2)))
    lit = lit + 0.5 * hl[..., None]
    img = np.where(mask[..., None], lit, img)
    img = img * 255 + rng.normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def timed(fn, reps: int) -> tuple[float, float]:
    """(operations per wall-clock second, operations per CPU second of this process).

    On a shared machine the wall rate falls with the load; the CPU rate is the per-core
    throughput (page-cached reads are pure CPU work: user + system time)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return reps / (time.perf_counter() - t), reps / (time.process_time() - c)


Row = tuple[str, float, tuple[float, float], float, tuple[float, float] | None]


def measure(
    images: np.ndarray, work: Path, args: argparse.Namespace, rng: np.random.Generator
) -> list[Row]:
    """(layout, bytes per image, single reads/s (wall, CPU), writes/s, slice images/s (wall,
    CPU)) for each layout."""
    n, size = images.shape[0], images.shape[1]
    raw = rng.uniform(-1, 1, (n, 10)).astype(np.float32)
    scene = (raw * 3).astype(np.float32)
    rows: list[Row] = []
    # --- PNG folder (the original layout): zlib level 1, as Blender's default 15% PNG
    # compression (which wrote the original files) maps to
    png = work / "png"
    (png / "images").mkdir(parents=True)
    digits = store.index_digits(n)
    t = time.perf_counter()
    for i in range(n):
        Image.fromarray(images[i]).save(png / "images" / f"{i:0{digits}d}.png", compress_level=1)
    np.save(png / "raw_latents.npy", raw)
    png_write = n / (time.perf_counter() - t)
    png_bytes = sum(p.stat().st_size for p in (png / "images").iterdir()) / n
    for p in (png / "images").iterdir():
        p.read_bytes()  # warm the page cache
    table = np.load(png / "raw_latents.npy")
    idx = rng.integers(0, n, args.png_reads)

    def read_png() -> None:
        for i in idx:
            with Image.open(png / "images" / f"{int(i):0{digits}d}.png") as im:
                a = np.asarray(im)
            _ = (a, table[i].copy())

    png_rate = timed(read_png, len(idx))
    with Image.open(png / "images" / f"{int(idx[0]):0{digits}d}.png") as im:
        assert (np.asarray(im) == images[idx[0]]).all()
    rows.append(("PNG folder (original layout)", png_bytes, png_rate, png_write, None))
    workers = os.cpu_count() or 1
    t = time.perf_counter()
    store.convert_original(png, work / "converted", workers=workers, progress=False)
    convert_rate = n / (time.perf_counter() - t)
    t = time.perf_counter()
    store.export_original(work / "converted", work / "exported", workers=workers, progress=False)
    export_rate = n / (time.perf_counter() - t)
    shutil.rmtree(work / "exported")
    shutil.rmtree(work / "converted")
    rows.append((f"ident3d convert, {workers} workers", 0.0, (0.0, 0.0), convert_rate, None))
    rows.append((f"ident3d export, {workers} workers", 0.0, (0.0, 0.0), export_rate, None))

    for comp in store.COMPRESSIONS:
        root = work / comp
        m = store.create_dataset(
            root, "images", n, args.shard_size, size, size, 10, {"bench": True},
            compression=comp,
        )  # fmt: skip
        t = time.perf_counter()
        for k in range(m["num_shards"]):
            a, c = store.shard_range(m, k)
            with store.ShardWriter(root, k, a, c, "images", size, size, 10) as w:
                for j in range(c):
                    w.write(j, images[a + j], raw[a + j], scene[a + j])
        write_rate = n / (time.perf_counter() - t)
        nbytes = sum(s["bytes"] for s in store.read_manifest(root)["shards"]) / n
        ds = store.open_dataset(root)
        for sh in ds.shards():
            sh.path.read_bytes()  # warm the page cache
        reads = args.reads if comp != "gzip" else max(args.reads // 8, 200)
        idx = rng.integers(0, n, reads)
        for i in idx[:50]:
            ds.read(int(i))  # open the shards

        def read_store(ds: store.Dataset = ds, idx: np.ndarray = idx) -> None:
            for i in idx:
                ds.read(int(i))

        rate = timed(read_store, len(idx))
        assert (ds.read(int(idx[0])).images == images[idx[0]]).all()
        batch = min(256, n // 2)
        starts = rng.integers(0, n - batch, 20 if comp != "gzip" else 3)

        buf = np.empty((batch, size, size, 3), np.uint8)

        def read_slices(
            ds: store.Dataset = ds, starts: np.ndarray = starts, out: np.ndarray = buf
        ) -> None:
            for s in starts:
                ds.read_slice(int(s), int(s) + len(out), out=out)

        slice_rate = timed(read_slices, len(starts) * batch)
        ds.close()
        rows.append((f"store, {comp}", nbytes, rate, write_rate, slice_rate))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images in each layout")
    ap.add_argument("--reads", type=int, default=5000, help="random reads per store layout")
    ap.add_argument("--png-reads", type=int, default=600, help="random reads from the PNG folder")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--noise", default="0.5,3", help="pixel noise sigmas, one run each")
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    print(
        f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}; one process; warm page cache"
    )
    for noise in (float(x) for x in args.noise.split(",")):
        rng = np.random.default_rng(0)
        images = np.stack([render_like(rng, args.size, noise) for _ in range(args.n)])
        work = Path(tempfile.mkdtemp(prefix="bench_store_", dir=args.dir))
        try:
            rows = measure(images, work, args, rng)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        png_wall, png_cpu = rows[0][2]
        tools, rows = rows[1:3], rows[:1] + rows[3:]
        print()
        print(
            f"{args.n} render-like {args.size}x{args.size} images, pixel noise sigma {noise}, "
            f"shards of {args.shard_size}; load average now {os.getloadavg()[0]:.1f}"
        )
        print(
            "| layout | KiB / image | random single reads / s (wall) | ... per CPU-second "
            "| vs PNG (wall / CPU) | 256-sample slices, images per CPU-s | writes / s (wall) |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, nbytes, (wall, cpu), write, sl in rows:
            print(
                f"| {name} | {nbytes / 1024:.1f} | {wall:,.0f} | {cpu:,.0f} | "
                f"{wall / png_wall:.1f}x / {cpu / png_cpu:.1f}x | "
                f"{'-' if sl is None else f'{sl[1]:,.0f}'} | {write:,.0f} |",
                flush=True,
            )
        for name, _, _, rate, _ in tools:
            print(f"{name}: {rate:,.0f} images/s wall (PNG decode/encode included)")


if __name__ == "__main__":
    main()
