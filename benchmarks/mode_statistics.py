"""Which latent mode did the released 3DIdent data use? Per-channel image statistics per mode.

Run: ``python benchmarks/mode_statistics.py`` (``make bench-modes``). Renders ``--n`` i.i.d.
images per latent mode of the ``3dident`` preset (``fast`` quality, 224 px, seed 0) with the
normal dataset path (``ident3d.render.render_dataset``), and prints their per-channel mean and
std next to the normalisation constants shipped with 3DIdent and with Causal3DIdent.

Two std statistics are printed, because the shipped constants were computed in two ways:
``std/img`` is the mean over images of each image's own std (what cl-ica's
``tools/3dident/get_mean_std.py`` computes: ``inputs.std(dim=(-1, -2))`` summed over images,
divided by their number), ``std/all`` the std over all pixels of all images (torchvision's
usual recipe). Nothing is asserted; the conclusion is drawn in docs/latents.md.
"""

from __future__ import annotations

import argparse
import os
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
from ident3d.scenes import load_preset  # noqa: E402
from ident3d.store import open_dataset  # noqa: E402

SHIPPED = {
    "3DIdent": ([0.3292, 0.3278, 0.3215], [0.0778, 0.0776, 0.0771]),
    "Causal3DIdent": ([0.4327, 0.2689, 0.2839], [0.1201, 0.1457, 0.1082]),
}


def stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of ``(N, H, W, 3)`` uint8 images in [0, 1] units."""
    x = images.reshape(len(images), -1, 3).astype(np.float64) / 255.0
    return {
        "mean": x.mean(axis=(0, 1)),
        "std_img": x.std(axis=1, ddof=1).mean(axis=0),  # get_mean_std.py's statistic
        "std_all": x.reshape(-1, 3).std(axis=0),
    }


def render_mode(mode: str, n: int, quality: str, workers: int, out: Path) -> np.ndarray:
    preset = load_preset("3dident")
    job = R.RenderJob(
        preset=preset,
        mode=mode,
        quality=quality,
        resolution=224,
        objects=["teapot"],
        pairs=False,
        n=n,
        seed=0,
        model=LatentModel(preset.mapping(mode).default_space()),
    )
    R.render_dataset(job, out, workers=workers, progress=False)
    ds = open_dataset(out)
    return ds.read_slice(0, len(ds)).images


def fmt(v: np.ndarray | list[float]) -> str:
    return " ".join(f"{x:.4f}" for x in v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images per mode")
    ap.add_argument("--modes", nargs="+", default=["box", "periodic", "clean"])
    ap.add_argument("--quality", default="fast")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    R.require_bpy()
    rows = {}
    tmp = Path(tempfile.mkdtemp(prefix="ident3d-modes-"))
    try:
        for mode in args.modes:
            t0 = time.perf_counter()
            rows[mode] = stats(render_mode(mode, args.n, args.quality, args.workers, tmp / mode))
            print(f"  {mode}: {args.n} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"per-channel statistics (R G B), {args.n} i.i.d. images per mode, {args.quality} quality, "
        f"224 px, seed 0, {os.cpu_count()} cores"
    )
    print(f"{'source':<22}{'mean':<24}{'std/img':<24}{'std/all':<24}")
    for mode, s in rows.items():
        print(f"{'mode ' + mode:<22}{fmt(s['mean']):<24}{fmt(s['std_img']):<24}{fmt(s['std_all'])}")
    for name, (mean, std) in SHIPPED.items():
        print(f"{name + ' (shipped)':<22}{fmt(mean):<24}{fmt(std)}  (statistic unknown)")
    print("distance of each mode's mean to the shipped means (max abs over channels):")
    for mode, s in rows.items():
        d = {k: float(np.abs(s["mean"] - np.array(v[0])).max()) for k, v in SHIPPED.items()}
        print(f"  {mode:<10}" + "  ".join(f"{k} {v:.4f}" for k, v in d.items()))


if __name__ == "__main__":
    main()
