"""Render benchmark: frame hand-off, worker scaling and worker memory.

Run: ``python benchmarks/bench_render.py`` (``make bench-render``). Everything is measured on
this machine in this run and printed; nothing is asserted. The quality presets' cost and
fidelity (PSNR / SSIM against the original generator's own renders, cost ratio to
``reference``) are measured by ``benchmarks/bench_fidelity.py``.

1. Frame hand-off: the cost of getting one rendered frame into numpy per file format (BMP
   parsed with numpy vs PNG decoded with PIL), after one render.
2. Worker scaling: images/s of ``ident3d.render.render_dataset`` at the ``fast`` preset with
   (workers, threads per worker) = (1, 1), (2, 1) and (1, 2), and the scaling efficiency
   ``ips(W=2) / (2 * ips(W=1))`` at one thread per worker; (1, 2) vs (2, 1) compares threads
   with processes on the same two cores.
3. Worker memory: RSS of one worker process rendering ``--memory-frames`` frames at a cheap
   setting (1 sample, no denoising, 32 x 32), sampled every 10%, plus Blender's datablock
   counts at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ident3d import render as R  # noqa: E402
from ident3d.latents import LatentModel  # noqa: E402
from ident3d.scenes import load_preset, scene_params  # noqa: E402

LATENT_SEED = 20210101


def fixed_frames(preset: Any, n: int) -> list[dict[str, np.ndarray]]:
    mapping = preset.mapping("box")
    raw = LatentModel(mapping.default_space()).sample(n, LATENT_SEED)
    params = scene_params(preset, mapping.to_scene(raw), "box")
    return [{k: v[i] for k, v in params.items()} for i in range(n)]


def bench_scaling(args: argparse.Namespace, preset: Any) -> dict[str, Any]:
    """images/s of render_dataset for (workers, threads) = (1, 1), (2, 1) and (1, 2)."""
    out: dict[str, Any] = {}
    mapping = preset.mapping("box")
    for w, t in ((1, 1), (2, 1), (1, 2)):
        tmp = Path(tempfile.mkdtemp(prefix="ident3d-bench-"))
        try:
            job = R.RenderJob(
                preset=preset,
                mode="box",
                quality="fast",
                resolution=args.resolution,
                objects=["teapot"],
                pairs=False,
                n=args.scaling_frames,
                seed=1,
                model=LatentModel(mapping.default_space()),
            )
            s = R.render_dataset(
                job, tmp / "d", workers=w, threads=t, progress=False, shard_size=10_000
            )
            # end to end includes spawning the workers and building their scenes (~1-2 s);
            # steady = frames / the busiest worker's own render time
            per = [st["render"] + st["apply"] + st["handoff"] for st in s.worker_stats.values()]
            frames = sum(int(st["frames"]) for st in s.worker_stats.values())
            out[f"W{w}T{t}"] = {
                "images_per_s_end_to_end": s.images_per_s,
                "seconds": s.seconds,
                "images_per_s_steady": frames / max(per),
            }
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for key in ("images_per_s_end_to_end", "images_per_s_steady"):
        out[f"efficiency_{key}"] = out["W2T1"][key] / (2 * out["W1T1"][key])
    return out


def bench_memory(args: argparse.Namespace, preset: Any) -> dict[str, Any]:
    from ident3d.blender.scene import SceneRenderer

    q = {"samples": 1, "adaptive_sampling": False, "denoise": False, "max_bounces": 0}
    r = SceneRenderer(preset.data, q, args.memory_resolution, threads=1)
    frames = fixed_frames(preset, 64)
    before = SceneRenderer.datablock_counts()
    marks = []
    n = args.memory_frames
    step = max(1, n // 10)
    t0 = time.perf_counter()
    for i in range(n):
        r.render(frames[i % len(frames)], seed=i)
        if i == 0 or (i + 1) % step == 0:
            marks.append((i + 1, R._rss_kib() / 1024.0))
    dt = time.perf_counter() - t0
    after = SceneRenderer.datablock_counts()
    r.close()
    return {
        "frames": n,
        "seconds": dt,
        "rss_mib": marks,
        "datablocks_before": before,
        "datablocks_after": after,
    }


def bench_handoff(args: argparse.Namespace, preset: Any) -> dict[str, Any]:
    """Cost of getting one rendered 224 px frame into numpy, per file format (after one
    render; the render result stays in memory, so only the hand-off is timed)."""
    import bpy
    from ident3d.blender.scene import SceneRenderer, read_bmp
    from PIL import Image

    r = SceneRenderer(preset.data, preset.quality("fast"), args.resolution, threads=args.threads)
    r.render(fixed_frames(preset, 1)[0], seed=0)
    result = bpy.data.images["Render Result"]
    img = r.scene.render.image_settings
    out: dict[str, Any] = {}
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    cases = [("BMP + numpy parse", "BMP", None), ("PNG level 0 + PIL", "PNG", 0),
             ("PNG level 15 + PIL", "PNG", 15)]  # fmt: skip
    for label, fmt, level in cases:
        img.file_format = fmt
        if level is not None:
            img.compression = level
        path = os.path.join(shm, f"ident3d-handoff.{fmt.lower()}")
        reps = args.handoff_reps
        t0 = time.perf_counter()
        for _ in range(reps):
            result.save_render(path, scene=r.scene)
            if fmt == "BMP":
                a = read_bmp(path)
            else:
                with Image.open(path) as im:
                    a = np.asarray(im.convert("RGB"))
        out[label] = {"ms": 1000 * (time.perf_counter() - t0) / reps, "shape": a.shape}
        os.unlink(path)
    img.file_format = "BMP"
    r.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scaling-frames", type=int, default=48)
    ap.add_argument("--memory-frames", type=int, default=10_000)
    ap.add_argument("--memory-resolution", type=int, default=32)
    ap.add_argument("--handoff-reps", type=int, default=50)
    ap.add_argument("--skip", nargs="*", default=[], choices=["handoff", "scaling", "memory"])
    ap.add_argument("--json", default=None, help="also write the results as JSON")
    args = ap.parse_args()
    R.require_bpy()
    preset = load_preset("3dident")
    cores = R.default_threads(1)
    print(f"machine: {cores} cores, {os.uname().machine}, load {os.getloadavg()}")
    results: dict[str, Any] = {"cores": cores, "load_start": os.getloadavg()}
    if "handoff" not in args.skip:
        h = bench_handoff(args, preset)
        results["handoff"] = h
        print(f"\n1. frame hand-off alone, {args.resolution} px, {args.handoff_reps} repetitions")
        for label, v in h.items():
            print(f"{label:<22}{v['ms']:>8.2f} ms per frame")
    if "scaling" not in args.skip:
        sc = bench_scaling(args, preset)
        results["scaling"] = sc
        print(f"\n2. worker scaling, fast preset, {args.scaling_frames} images")
        for key in ("W1T1", "W2T1", "W1T2"):
            r = sc[key]
            print(
                f"{key}: {r['images_per_s_end_to_end']:.2f} images/s end to end "
                f"({r['seconds']:.1f} s incl. start-up), {r['images_per_s_steady']:.2f} steady"
            )
        print(
            f"efficiency W=2 vs W=1 (1 thread each): "
            f"{sc['efficiency_images_per_s_end_to_end']:.2f} end to end, "
            f"{sc['efficiency_images_per_s_steady']:.2f} steady"
        )
    if "memory" not in args.skip:
        m = bench_memory(args, preset)
        results["memory"] = m
        print(
            f"\n3. worker memory: {m['frames']} frames at {args.memory_resolution}px, 1 spp "
            f"({m['seconds']:.0f} s)"
        )
        print("   RSS MiB after frames: " + ", ".join(f"{f}: {v:.1f}" for f, v in m["rss_mib"]))
        print(f"   datablocks before {m['datablocks_before']} after {m['datablocks_after']}")
    results["load_end"] = os.getloadavg()
    print(f"\nload average at the end: {os.getloadavg()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
