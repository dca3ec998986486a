"""The Utah teapot, tessellated from Martin Newell's Bezier patch data (numpy only).

The 32 bicubic patches and 306 control points live as data in ``scenes/meshes/teapot.bpt``
(the classic ``.bpt`` layout). :func:`tessellate` evaluates every patch on a regular
``(segments + 1) x (segments + 1)`` grid, welds the vertices that patches share along their
seams, drops the faces that collapse at the lid's and the bottom's poles (quads with two equal
corners become triangles) and returns plain arrays that :mod:`ident3d.blender.scene` turns into
a mesh. :func:`place` puts them where the original 3DIdent asset has its vertices (a preset's
``[teapot]`` section: ``scale * Rz(rotation_z_deg) * (p - origin)``). No bpy here, so it is testable anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

DATA_FILE = Path(__file__).resolve().parent.parent / "scenes" / "meshes" / "teapot.bpt"


def _data_file() -> Path:
    """Locate ``teapot.bpt`` in a source checkout or an installed ``ident3d.presets``."""
    if DATA_FILE.exists():
        return DATA_FILE
    from importlib import resources

    return Path(str(resources.files("ident3d.presets").joinpath("meshes", "teapot.bpt")))


def load_patches(path: str | Path | None = None) -> np.ndarray:
    """Read a ``.bpt`` file into an array of control points of shape ``(patches, 4, 4, 3)``."""
    lines = [
        ln.split("#", 1)[0].strip() for ln in Path(path or _data_file()).read_text().splitlines()
    ]
    lines = [ln for ln in lines if ln]
    n_patches = int(lines[0])
    patches = np.array(
        [[int(t) for t in ln.replace(",", " ").split()] for ln in lines[1 : 1 + n_patches]],
        dtype=np.int64,
    )
    n_points = int(lines[1 + n_patches])
    points = np.array(
        [
            [float(t) for t in ln.replace(",", " ").split()]
            for ln in lines[2 + n_patches : 2 + n_patches + n_points]
        ],
        dtype=np.float64,
    )
    if patches.shape != (n_patches, 16) or points.shape != (n_points, 3):
        raise ValueError(f"malformed Bezier patch file {path or _data_file()}")
    return points[patches - 1].reshape(n_patches, 4, 4, 3)


def _bernstein(t: np.ndarray) -> np.ndarray:
    """Cubic Bernstein basis, shape ``(len(t), 4)``."""
    s = 1.0 - t
    return np.stack([s**3, 3 * t * s**2, 3 * t**2 * s, t**3], axis=1)


def tessellate(
    segments: int, path: str | Path | None = None, weld_tol: float = 1e-5
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Tessellate the teapot: ``(vertices (V, 3) float64, faces as index tuples)``.

    Each patch edge is split into ``segments`` pieces. Vertices closer than ``weld_tol``
    (relative to the model's size) are merged, so the surface is closed along patch seams.
    Coordinates are as in the data file (z up, spout along +x); the caller centres and scales
    (or :func:`place` puts them). Faces are wound counter-clockwise seen from outside, so their
    normals point out of the teapot, as in the original 3DIdent asset.
    """
    if segments < 1:
        raise ValueError("segments must be at least 1")
    ctrl = load_patches(path)
    t = np.linspace(0.0, 1.0, segments + 1)
    b = _bernstein(t)
    # surface point = sum_ij B_i(u) B_j(v) P_ij, for every patch at once
    grid = np.einsum("ui,vj,pijk->puvk", b, b, ctrl)  # (P, U, V, 3)
    pts = grid.reshape(-1, 3)
    scale = float(np.ptp(pts, axis=0).max())
    keys = np.round(pts / (scale * weld_tol)).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    # keep welded vertices in first-seen order (stable, deterministic numbering)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    vid = rank[inverse].reshape(grid.shape[:3])
    verts = pts[first[order]]
    faces: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    n = segments
    for p in range(grid.shape[0]):
        for i in range(n):
            for j in range(n):
                # wound so that normals point outward (the patch data's (u, v) order points
                # them inward, which Cycles shades as back faces: its Fresnel then inverts the
                # IOR and the rims turn glossy-black)
                quad = (vid[p, i, j], vid[p, i, j + 1], vid[p, i + 1, j + 1], vid[p, i + 1, j])
                face: list[int] = []
                for v in quad:
                    if v not in face:
                        face.append(int(v))
                if len(face) < 3:
                    continue
                key = tuple(sorted(face))
                if key in seen:  # the same face from two coincident patches
                    continue
                seen.add(key)
                faces.append(tuple(face))
    return verts, faces


def place(points: np.ndarray, placement: Mapping[str, Any]) -> np.ndarray:
    """``scale * Rz(rotation_z_deg) * (p - origin)`` of patch points ``p`` (``(V, 3)``).

    With the 3dident preset's ``[teapot]`` values this reproduces the vertices of the original
    generator's ``ShapeTeapot.blend`` scaled x1.5 (to within 2e-5 of its size): spout along
    ``(+x, -y)``, pivot on the body axis 1.360 above the base, bounding box 4.442 x 4.442 x 2.999.
    """
    a = math.radians(float(placement["rotation_z_deg"]))
    c, s = math.cos(a), math.sin(a)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    p = np.asarray(points, np.float64) - np.asarray(placement["origin"], np.float64)
    return float(placement["scale"]) * (p @ rz.T)
