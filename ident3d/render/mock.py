"""The mock renderer: a pure-numpy stand-in for Blender, to test the pipeline without bpy."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ident3d.errors import UsageError


class MockRenderer:
    """A pure-numpy stand-in for :class:`ident3d.blender.scene.SceneRenderer`.

    Same constructor and ``render(frame, seed, object_class)``; draws the ground in its colour
    (clipped to [0, 1]), the spotlight's lit ellipse where the spotlight points, and the object
    as a shaded disc at the camera projection of its location, its radius set by the class and
    squeezed by the rotation. Deterministic; a little seeded noise stands in for path-tracing
    noise. Used to test the pipeline without Blender.
    """

    def __init__(
        self,
        preset: Mapping[str, Any],
        quality: Mapping[str, Any],
        resolution: int,
        objects: Sequence[str] = ("teapot",),
        threads: int = 0,
        gpu: bool = False,
    ) -> None:
        if gpu:
            raise UsageError("--gpu needs the Blender renderer (the mock renderer is CPU-only).")
        self.preset = preset
        self.resolution = int(resolution)
        self.n_classes = len(objects)
        cam = preset["camera"]
        self.cam_loc = np.asarray(cam["location"], np.float64)
        fwd = np.asarray(cam["target"], np.float64) - self.cam_loc
        self.fwd = fwd / np.linalg.norm(fwd)
        right = np.cross(self.fwd, [0.0, 0.0, 1.0])
        self.right = right / np.linalg.norm(right)
        self.up = np.cross(self.right, self.fwd)
        self.focal = float(cam["lens_mm"]) / float(cam["sensor_width_mm"])
        self.size = float(preset["object"]["size"])
        self.noise = 2.0 / math.sqrt(float(quality["samples"]))
        self.timings: dict[str, float] = {"apply": 0.0, "render": 0.0, "handoff": 0.0}
        self.frames = 0
        r = self.resolution
        yy, xx = np.mgrid[0:r, 0:r].astype(np.float64)
        self.u = (xx + 0.5) / r - 0.5  # image-plane coordinates in sensor widths
        self.v = 0.5 - (yy + 0.5) / r
        # ground intersection of each pixel's ray (z = -S)
        d = (
            self.fwd[None, None, :] * self.focal
            + self.u[..., None] * self.right[None, None, :]
            + self.v[..., None] * self.up[None, None, :]
        )
        t = (-self.size - self.cam_loc[2]) / np.minimum(d[..., 2], -1e-9)
        self.ground_xy = self.cam_loc[None, None, :2] + t[..., None] * d[..., :2]

    def project(self, p: np.ndarray) -> tuple[float, float, float]:
        """Pixel column, row and depth of scene point ``p``."""
        rel = np.asarray(p, np.float64) - self.cam_loc
        depth = float(rel @ self.fwd)
        u = self.focal * float(rel @ self.right) / depth
        v = self.focal * float(rel @ self.up) / depth
        r = self.resolution
        return (u + 0.5) * r, (0.5 - v) * r, depth

    def render(self, frame: Mapping[str, Any], seed: int, object_class: int = 0) -> np.ndarray:
        t0 = time.perf_counter()
        r = self.resolution
        ground = np.clip(np.asarray(frame["ground_color"], np.float64), 0.0, 1.0)
        img = np.broadcast_to(ground * 0.35, (r, r, 3)).copy()
        # spotlight: lit ellipse on the ground, around where the spot's axis meets it
        spot = np.asarray(frame["spot_location"], np.float64)
        obj = np.asarray(frame["object_location"], np.float64)
        axis = obj - spot
        t = (-self.size - spot[2]) / min(axis[2], -1e-9)
        hit = spot[:2] + t * axis[:2]
        d2 = ((self.ground_xy - hit) ** 2).sum(-1)
        lit = np.exp(-d2 / (2 * (0.35 * self.size) ** 2))
        spot_col = np.clip(np.asarray(frame["spot_color"], np.float64), 0.0, 1.0)
        img += 0.6 * lit[..., None] * spot_col * np.maximum(ground, 0.2)
        # object: a disc, radius from class and rotation
        col, row, depth = self.project(obj)
        rot = np.asarray(frame["object_rotation"], np.float64)
        radius_scene = 0.5 * self.size * (0.6 + 0.4 * (object_class + 1) / self.n_classes)
        rad = self.focal * radius_scene / depth * r
        squeeze = 0.55 + 0.45 * abs(math.cos(rot[0])) * (0.75 + 0.25 * math.cos(2 * rot[1]))
        ang = rot[2]
        yy, xx = np.mgrid[0:r, 0:r].astype(np.float64) + 0.5
        dx, dy = xx - col, yy - row
        a = dx * math.cos(ang) + dy * math.sin(ang)
        b = -dx * math.sin(ang) + dy * math.cos(ang)
        inside = (a / rad) ** 2 + (b / (rad * squeeze)) ** 2 <= 1.0
        shade = np.clip(0.55 + 0.45 * (-dy / max(rad, 1e-6)), 0.2, 1.0)
        obj_col = np.clip(np.asarray(frame["object_color"], np.float64), 0.0, 1.0)
        img[inside] = (shade[inside, None] * obj_col) * 0.9 + 0.1 * spot_col
        rng = np.random.default_rng(int(seed))
        img += rng.normal(0.0, self.noise / 255.0, img.shape)
        out = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        self.timings["render"] += time.perf_counter() - t0
        self.frames += 1
        return out

    def close(self) -> None:
        pass
