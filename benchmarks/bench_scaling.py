"""Scaling-out benchmark: render images/s per CPU core at the ``fast`` and ``balanced`` presets,
and the cost of the fan-out (``ident3d render --jobs K --executor local``) against one process.

Run: ``python benchmarks/bench_scaling.py`` (brief by default: 16 pairs per case). Everything
printed under "measured" was measured on this machine in this run; the per-node table is an
extrapolation from the per-core numbers and says so. Nothing is asserted.

1. Per core: ``render_dataset`` with 1 worker x 1 Cycles thread, 224 px, Blender, per preset:
   images/s end to end (spawning the worker and building its scene included) and steady
   (images / the worker's own render time).
2. Fan-out: the same dataset (``fast``) rendered by K local submitit jobs of 1 worker x 1 thread
   each (end to end: job start-up, Blender import, merge and verify included) against one
   process of 1 worker x K threads, and whether the two datasets are identical.
3. Sizing (extrapolated): images/s per node of C cores = C x per-core steady rate x the
   two-worker scaling efficiency measured by ``make bench-render`` (0.76 steady); the hours for
   500,000 images (250,000 pairs) on N such nodes.
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
from ident3d import store  # noqa: E402
from ident3d.latents import latent_model_from_options  # noqa: E402
from ident3d.scenes import load_preset  # noqa: E402

#: Two-worker scaling efficiency (steady) from `make bench-render` (docs/render.md).
EFFICIENCY = 0.76


def _job(preset: Any, quality: str, n: int, resolution: int) -> R.RenderJob:
    mapping = preset.mapping("box")
    model = latent_model_from_options(space=mapping.default_space(), sigma=0.1)
    return R.RenderJob(preset=preset, mode="box", quality=quality, resolution=resolution,
                       objects=["teapot"], pairs=True, n=n, seed=7, model=model)  # fmt: skip


def per_core(preset: Any, quality: str, n: int, resolution: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="ident3d-bench-"))
    try:
        s = R.render_dataset(_job(preset, quality, n, resolution), tmp / "d", workers=1,
                             threads=1, progress=False, shard_size=n)  # fmt: skip
        st = next(iter(s.worker_stats.values()))
        busy = st["render"] + st["apply"] + st["handoff"]
        return {"images": s.images, "seconds": s.seconds, "end_to_end": s.images_per_s,
                "steady": int(st["frames"]) / busy}  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fanout(preset: Any, n: int, resolution: int, jobs: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ident3d-bench-"))
    try:
        shard = max(1, n // (2 * jobs))
        t0 = time.perf_counter()
        one = R.render_dataset(_job(preset, "fast", n, resolution), tmp / "one", workers=1,
                               threads=jobs, progress=False, shard_size=shard)  # fmt: skip
        t_one = time.perf_counter() - t0
        t0 = time.perf_counter()
        fan = R.render_fanout(_job(preset, "fast", n, resolution), tmp / "fan", jobs=jobs,
                              executor="local", workers=1, threads=1, shard_size=shard,
                              progress=False, echo=lambda s: None)  # fmt: skip
        t_fan = time.perf_counter() - t0
        a, b = store.open_dataset(tmp / "one"), store.open_dataset(tmp / "fan")
        sa, sb = a.read_slice(0, len(a)), b.read_slice(0, len(b))
        same = all(np.array_equal(getattr(sa, f), getattr(sb, f))
                   for f in ("images", "raw", "scene"))  # fmt: skip
        return {"jobs": jobs, "images": one.images, "one_process_s": t_one,
                "fanout_s": t_fan, "fanout_complete": fan.complete, "identical": same}  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="pairs per case")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-fanout", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    preset = load_preset("3dident")
    load0 = os.getloadavg()[0]
    res: dict[str, Any] = {"load_start": load0, "cores": len(os.sched_getaffinity(0))}
    for q in ("fast", "balanced"):
        res[q] = per_core(preset, q, args.n, args.resolution)
    if not args.skip_fanout:
        res["fanout"] = fanout(preset, args.n, args.resolution, args.jobs)
    res["load_end"] = os.getloadavg()[0]
    print(f"measured on this machine ({res['cores']} cores, load average {load0:.1f} at the "
          f"start, {res['load_end']:.1f} at the end), {args.resolution} px, Blender:")  # fmt: skip
    print("| preset | images | images/s per core, end to end | images/s per core, steady |")
    print("|---|---|---|---|")
    for q in ("fast", "balanced"):
        r = res[q]
        print(f"| {q} | {r['images']} | {r['end_to_end']:.2f} | {r['steady']:.2f} |")
    if "fanout" in res:
        f = res["fanout"]
        print(f"fan-out: {f['images']} images, {f['jobs']} local jobs x 1 thread "
              f"{f['fanout_s']:.1f} s (start-up, merge and verify included) vs one process x "
              f"{f['jobs']} threads {f['one_process_s']:.1f} s; identical: {f['identical']}")  # fmt: skip
    print()
    print(f"EXTRAPOLATED, not measured: per node = cores x steady per-core rate x {EFFICIENCY} "
          "(two-worker efficiency from make bench-render); 500,000 images")  # fmt: skip
    print("| preset | cores per node | images/s per node | hours on 1 node | hours on 8 nodes |")
    print("|---|---|---|---|---|")
    for q in ("fast", "balanced"):
        for cores in (32, 64, 128):
            ips = cores * res[q]["steady"] * EFFICIENCY
            h = 500_000 / ips / 3600
            print(f"| {q} | {cores} | {ips:.0f} | {h:.1f} | {h / 8:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
