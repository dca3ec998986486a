"""Fidelity against the original 3DIdent generator: its reference renders and image metrics.

``reference/orig-renders/`` (in a source checkout) holds images that the original generator
itself rendered (512 samples, denoised, Cycles seed 0) with their raw and scene latents, 8 per
latent mode (see its README). :func:`load_reference` reads one mode; :func:`psnr` and
:func:`ssim` compare 8-bit images. ``benchmarks/bench_fidelity.py`` renders the same scene
latents with every quality preset and scores them with these functions; the bpy tests use them
for a PSNR floor. Pure numpy/scipy: no bpy here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ident3d.errors import DataError

#: The shipped reference set, in a source checkout.
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference" / "orig-renders"
MODES = ("box", "periodic")


@dataclass(frozen=True)
class ReferenceSet:
    """One latent mode of the reference set: row ``i`` of each array belongs to image ``i``."""

    mode: str
    raw_latents: np.ndarray  # (N, 10) box or (N, 11) periodic, as the original saved them
    latents: np.ndarray  # (N, 10) scene units, as the original computed them (float32)
    images: np.ndarray  # (N, H, W, 3) uint8

    def __len__(self) -> int:
        return len(self.images)


def load_reference(mode: str, root: str | Path | None = None) -> ReferenceSet:
    """Read ``<root>/<mode>/{raw_latents,latents}.npy`` and ``images/<i>.png``."""
    from PIL import Image

    base = Path(root) if root is not None else REFERENCE_DIR
    folder = base / mode
    if mode not in MODES or not folder.is_dir():
        raise DataError(f"no reference renders for mode {mode!r} in {base}")
    raw = np.load(folder / "raw_latents.npy", allow_pickle=False)
    lat = np.load(folder / "latents.npy", allow_pickle=False)
    images = []
    for i in range(len(lat)):
        with Image.open(folder / "images" / f"{i}.png") as im:
            images.append(np.asarray(im.convert("RGB")))
    return ReferenceSet(mode, raw, lat, np.stack(images))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two 8-bit images, in dB (inf if identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03), mean over RGB."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for ch in range(a.shape[-1]):
        x = a[..., ch].astype(np.float64)
        y = b[..., ch].astype(np.float64)

        def f(img: np.ndarray) -> np.ndarray:
            return gaussian_filter(img, 1.5, truncate=3.5)

        mx, my = f(x), f(y)
        sxx = f(x * x) - mx * mx
        syy = f(y * y) - my * my
        sxy = f(x * y) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        vals.append(m.mean())
    return float(np.mean(vals))
