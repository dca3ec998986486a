"""Soak benchmark: memory over long runs (one render worker, a 100,000-image convert and load).

Run: ``python benchmarks/bench_soak.py`` (``make bench-soak``). Everything is measured on this
machine in this run and printed; nothing is asserted.

1. Render: one Blender scene (what one render worker holds) renders ``--frames`` frames of the
   3dident preset (``fast`` quality, ``--resolution`` px, box-mode latents, a new latent and
   seed every frame); the process's resident memory (RSS) is recorded every ``--every`` frames.
2. Convert: an original-layout 3DIdent folder of ``--images`` PNGs (``--png-size`` px, smooth
   random images) is converted into the store with ``ident3d.store.convert_original``; the
   RSS of this process before and after, and the peak RSS of the decoding workers.
3. Load: every image of the converted store is read once through ``ident3d.data.ImageDataset``
   in order, RSS recorded every ``--images // 10`` images.

A flat RSS curve is the claim under test: nothing may grow with the number of frames or images
(leaked datablocks, buffers or file handles would show here long before they crash a job).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ident3d import render as R  # noqa: E402
from ident3d.latents import LatentModel  # noqa: E402
from ident3d.scenes import load_preset, scene_params  # noqa: E402


def rss_mib() -> float:
    return R._rss_kib() / 1024.0


def soak_render(frames: int, every: int, resolution: int) -> list[tuple[int, float]]:
    from ident3d.blender.scene import SceneRenderer

    preset = load_preset("3dident")
    mapping = preset.mapping("box")
    raw = LatentModel(mapping.default_space()).sample(frames, seed=7)
    params = scene_params(preset, mapping.to_scene(raw), "box")
    r = SceneRenderer(preset.data, preset.quality("fast"), resolution, threads=2)
    marks = []
    t0 = time.perf_counter()
    try:
        for i in range(frames):
            r.render({k: v[i] for k, v in params.items()}, seed=R.frame_seed(7, i))
            if i == 0 or (i + 1) % every == 0:
                marks.append((i + 1, rss_mib()))
                print(f"  render {i + 1}/{frames}: RSS {marks[-1][1]:.1f} MiB", file=sys.stderr)
    finally:
        r.close()
    print(f"  render: {frames} frames in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return marks


def make_png_folder(root: Path, n: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    np.save(root / "raw_latents.npy", rng.uniform(-1, 1, (n, 10)).astype(np.float32))
    yy, xx = np.mgrid[0:size, 0:size] / size
    digits = len(str(n - 1))
    for i in range(n):
        a, b, c = rng.uniform(0, 255, 3)
        img = np.stack([a * xx, b * yy, c * (1 - xx * yy)], -1).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{i:0{digits}d}.png", compress_level=1)


def soak_convert_and_load(n: int, size: int, tmp: Path) -> dict[str, object]:
    from ident3d import data as D
    from ident3d import store

    src, dst = tmp / "orig", tmp / "store"
    t0 = time.perf_counter()
    make_png_folder(src, n, size)
    made = time.perf_counter() - t0
    before = rss_mib()
    t0 = time.perf_counter()
    store.convert_original(src, dst, workers=2, progress=False)
    convert_s = time.perf_counter() - t0
    after = rss_mib()
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    ds = D.ImageDataset(dst)
    marks = [(0, rss_mib())]
    step = max(1, n // 10)
    t0 = time.perf_counter()
    for i in range(len(ds)):
        ds[i]
        if (i + 1) % step == 0:
            marks.append((i + 1, rss_mib()))
    load_s = time.perf_counter() - t0
    return {
        "png_seconds": made,
        "convert_seconds": convert_s,
        "rss_before_convert": before,
        "rss_after_convert": after,
        "convert_workers_peak_rss": children_peak,
        "load_seconds": load_s,
        "load_marks": marks,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=500)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--png-size", type=int, default=32)
    ap.add_argument("--skip", nargs="*", default=[], choices=["render", "convert"])
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    if "render" not in args.skip:
        R.require_bpy()
        marks = soak_render(args.frames, args.every, args.resolution)
        print(
            f"\n1. render soak: one scene, {args.frames} frames at {args.resolution} px, fast"
            f" quality; RSS (MiB) after frames:"
        )
        print("   " + ", ".join(f"{f}: {m:.1f}" for f, m in marks))
        print(f"   growth first -> last: {marks[-1][1] - marks[0][1]:+.1f} MiB")
    if "convert" not in args.skip:
        tmp = Path(tempfile.mkdtemp(prefix="ident3d-soak-"))
        try:
            res = soak_convert_and_load(args.images, args.png_size, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(
            f"\n2. convert {args.images} PNGs ({args.png_size} px; written in "
            f"{res['png_seconds']:.0f} s): {res['convert_seconds']:.0f} s with 2 workers; "
            f"RSS of this process {res['rss_before_convert']:.1f} -> "
            f"{res['rss_after_convert']:.1f} MiB; peak RSS of a decoding worker (pages shared "
            f"with this process included) "
            f"{res['convert_workers_peak_rss']:.1f} MiB"
        )
        marks = res["load_marks"]
        print(
            f"3. load all {args.images} images through ImageDataset in "
            f"{res['load_seconds']:.1f} s; RSS (MiB) after images:"
        )
        print("   " + ", ".join(f"{f}: {m:.1f}" for f, m in marks))  # type: ignore[union-attr]
        print(f"   growth first -> last: {marks[-1][1] - marks[0][1]:+.1f} MiB")  # type: ignore[index]


if __name__ == "__main__":
    main()
