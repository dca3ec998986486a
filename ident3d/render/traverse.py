"""Latent traversals: a grid of scene latents, rendered directly (no dataset), as a figure."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ident3d.latents import LatentMapping, LatentModel
from ident3d.render.job import check_objects, check_resolution, require_bpy
from ident3d.render.workers import DEFAULT_CHUNK, Task, WorkerSpec, _run, default_threads
from ident3d.scenes import Preset, scene_params


def traversal_latents(
    mapping: LatentMapping, steps: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Scene latents for a traversal grid: ``(steps, 10, 10)`` (row = step, column = factor
    varied) and the per-factor values ``(steps, 10)``. Ranges are the min..max of the mode's
    scene values over 4096 seeded samples; the other factors sit at their median."""
    model = LatentModel(mapping.default_space())
    scene = mapping.to_scene(model.sample(4096, seed))
    lo, hi = scene.min(axis=0), scene.max(axis=0)
    base = np.median(scene, axis=0)
    values = np.linspace(lo, hi, steps)  # (steps, 10)
    grid = np.broadcast_to(base, (steps, scene.shape[1], scene.shape[1])).copy()
    for j in range(scene.shape[1]):
        grid[:, j, j] = values[:, j]
    return grid, values


def render_scene_latents(
    preset: Preset,
    mode: str,
    scene_latents: np.ndarray,
    *,
    quality: str,
    resolution: int,
    objects: Sequence[str] = ("teapot",),
    workers: int = 1,
    seed: int = 0,
    renderer: str = "blender",
    gpu: bool = False,
) -> np.ndarray:
    """Render scene-unit latents ``(N, 10)`` directly (no dataset); returns ``(N, H, W, 3)``."""
    if renderer == "blender":
        require_bpy()
    resolution = check_resolution(resolution)
    objects = check_objects(objects)
    lat = np.asarray(scene_latents, np.float64)
    params = scene_params(preset, lat, mode)
    spec = WorkerSpec(
        renderer,
        preset.data,
        preset.quality(quality),
        resolution,
        tuple(objects),
        default_threads(max(workers, 1)),
        gpu,
    )
    frames = [[{k: v[i] for k, v in params.items()}] for i in range(len(lat))]

    def tasks() -> Iterator[Task]:
        for a in range(0, len(frames), DEFAULT_CHUNK):
            part = frames[a : a + DEFAULT_CHUNK]
            yield Task(0, a, part, np.full((len(part), 1), seed), np.zeros(len(part), np.int64))

    out = np.empty((len(lat), resolution, resolution, 3), np.uint8)
    for _, lo, images, _ in _run(spec, tasks(), workers):
        out[lo : lo + images.shape[0]] = images[:, 0]
    return out


def _traversal_grid(images: np.ndarray, values: np.ndarray, names: Sequence[str]) -> Any:
    """The matplotlib figure of :func:`traversal_figure` (drawn, not saved).

    Each value label sits inside its own image (bottom left, on a light box), so no row can
    cover the labels of the row above, whatever the grid size.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, nf = images.shape[:2]
    fig, axes = plt.subplots(steps, nf, figsize=(1.25 * nf, 1.25 * steps + 0.4), squeeze=False)
    for i in range(steps):
        for j in range(nf):
            ax = axes[i, j]
            ax.imshow(images[i, j])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(
                0.04,
                0.04,
                f"{values[i, j]:+.2f}",
                transform=ax.transAxes,
                fontsize=6,
                ha="left",
                va="bottom",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75},
            )
            if i == 0:
                ax.set_title(names[j], fontsize=8)
    fig.suptitle(
        "latent traversal: one column per factor, each row a step along it (value in the image)",
        fontsize=9,
    )
    fig.tight_layout(pad=0.3, h_pad=0.3, w_pad=0.2, rect=(0.0, 0.0, 1.0, 1.0 - 0.35 / (steps + 1)))
    fig.canvas.draw()
    return fig


def traversal_figure(
    images: np.ndarray, values: np.ndarray, names: Sequence[str], out: str | os.PathLike[str]
) -> None:
    """Save the grid ``images (steps, factors, H, W, 3)`` with factor names as column titles."""
    import matplotlib.pyplot as plt

    fig = _traversal_grid(images, values, names)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    os.replace(tmp, out)
