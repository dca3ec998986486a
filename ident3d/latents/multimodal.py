"""The Multimodal3DIdent latents: image factors, text factors and their scene units.

Faithful to the generator (Multimodal3DIdent ``generate_latents.py`` lines 115-147): object
shape uniform on ``{0..n_shapes-1}``, x and y grid positions uniform on ``{0, 1, 2}``, z = 0,
rotations, object hue, spotlight position, spotlight hue and background hue uniform on
``[0, 1]``; optionally the object hue depends on x, ``hue = (x + U) / 3``; the text phrasing
uniform over the templates and the colour palette of each caption uniform over the palettes
(``hue_to_colorname``, lines 59-76). The colour name is the nearest in RGB to ``HSV(hue, 1, 1)``
within that palette (:mod:`ident3d.text.palettes`).

Unlike the generator (one global ``np.random`` stream, so sample ``i`` depends on ``n``), the
draws here are block-seeded (:func:`ident3d.latents.model.block_rng` on a stream of their own):
sample ``i`` and its caption do not depend on ``n``, the workers or the sharding.

Scene units (``generate_images.py`` lines 301-355): Blender ``x = grid[ypos]`` (the image's
vertical), ``y = grid[xpos]`` (its horizontal), ``z = z``; rotations and the spotlight angle
``low + u (high - low)`` (``pi u - pi/2``); hues as angles ``2 pi h`` with ``h = u`` for the
object and ``h = low + u (high - low)`` (``(u - 0.5) / 2``) for the spotlight and the ground.
Every number comes from the preset's ``[multimodal]`` table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents.model import BLOCK_SIZE

#: Columns of ``latents_image.csv`` in the generator's order (generate_latents.py 126-138).
IMAGE_COLUMNS = (
    "object_shape",
    "object_xpos",
    "object_ypos",
    "object_zpos",
    "object_alpharot",
    "object_betarot",
    "object_gammarot",
    "object_color",
    "spotlight_pos",
    "spotlight_color",
    "background_color",
)
#: Columns of ``latents_text.csv`` in the generator's order (generate_latents.py 139-147).
TEXT_COLUMNS = (
    "object_shape",
    "object_xpos",
    "object_ypos",
    "object_zpos",
    "object_color_name",
    "object_color_index",
    "text_phrasing",
)
#: The integer text latents ident3d stores: the generator's numeric text columns plus the
#: palette each caption's colour was named from (text-specific; the generator does not save it).
TEXT_INT_COLUMNS = (
    "object_shape",
    "object_xpos",
    "object_ypos",
    "object_zpos",
    "object_color_index",
    "text_phrasing",
    "palette",
)
#: Discrete factors per modality (multimodal-contrastive-learning datasets.py lines 58-73).
DISCRETE = {
    "image": ("object_shape", "object_xpos", "object_ypos"),
    "text": ("object_shape", "object_xpos", "object_ypos", "object_color_index", "text_phrasing"),
}
_MM_STREAM = 0x6D6D3364  # "mm3d": this sampler's own entropy word


@dataclass(frozen=True)
class MultimodalSpec:
    """The preset's ``[multimodal]`` table and its object classes, as numbers."""

    shape_names: tuple[str, ...]
    x_names: tuple[str, ...]
    y_names: tuple[str, ...]
    templates: tuple[str, ...]
    palettes: tuple[str, ...]
    grid: tuple[float, ...]
    z: float
    rotation_range_deg: tuple[float, float]
    spot_angle_range_deg: tuple[float, float]
    light_hue_range: tuple[float, float]
    position_dependent_color: bool

    @classmethod
    def from_preset(cls, data: Mapping[str, Any], source: str = "preset") -> MultimodalSpec:
        mm = data.get("multimodal")
        if not isinstance(mm, Mapping):
            raise UsageError(f"{source} has no [multimodal] table: it is not an image/text preset.")
        spec = cls(
            shape_names=tuple(mm["shape_names"]),
            x_names=tuple(mm["x_names"]),
            y_names=tuple(mm["y_names"]),
            templates=tuple(mm["templates"]),
            palettes=tuple(mm["palettes"]),
            grid=tuple(float(g) for g in mm["grid"]),
            z=float(mm["z"]),
            rotation_range_deg=tuple(mm["rotation_range_deg"]),  # type: ignore[arg-type]
            spot_angle_range_deg=tuple(mm["spot_angle_range_deg"]),  # type: ignore[arg-type]
            light_hue_range=tuple(mm["light_hue_range"]),  # type: ignore[arg-type]
            position_dependent_color=bool(mm["position_dependent_color"]),
        )
        n_classes = len(data["object"].get("classes", [data["object"]["shape"]]))
        if n_classes != len(spec.shape_names):
            raise UsageError(
                f"{source}: 'multimodal.shape_names' names {len(spec.shape_names)} shapes but "
                f"'object.classes' lists {n_classes}."
            )
        if not len(spec.grid) == len(spec.x_names) == len(spec.y_names):
            raise UsageError(
                f"{source}: 'multimodal.grid', 'x_names' and 'y_names' must have equal lengths."
            )
        return spec

    @property
    def n_shapes(self) -> int:
        return len(self.shape_names)

    @property
    def n_grid(self) -> int:
        return len(self.grid)


@lru_cache(maxsize=4)  # a render asks for a few samples of the same block at a time
def _draw_block(spec: MultimodalSpec, seed: int, block: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence([_MM_STREAM, int(seed)], spawn_key=(block,)))
    b = BLOCK_SIZE
    shape = rng.integers(0, spec.n_shapes, b)
    xpos = rng.integers(0, spec.n_grid, b)
    ypos = rng.integers(0, spec.n_grid, b)
    rot = rng.random((b, 3))
    hue_u = rng.random(b)
    spot = rng.random(b)
    spot_hue = rng.random(b)
    bg_hue = rng.random(b)
    palette = rng.integers(0, len(spec.palettes), b)
    phrasing = rng.integers(0, len(spec.templates), b)
    hue = (xpos + hue_u) / spec.n_grid if spec.position_dependent_color else hue_u
    image = np.column_stack(
        [shape, xpos, ypos, np.full(b, spec.z), rot, hue, spot, spot_hue, bg_hue]
    ).astype(np.float64)
    out = {"image": image, "palette": palette, "phrasing": phrasing}
    for v in out.values():
        v.flags.writeable = False  # shared by the cache: callers get copies (slices + concat)
    return out


def sample_multimodal(
    spec: MultimodalSpec, start: int, stop: int, seed: int
) -> dict[str, np.ndarray]:
    """Latents of samples ``start:stop``: ``image`` float64 ``(k, 11)`` (:data:`IMAGE_COLUMNS`),
    ``palette`` and ``phrasing`` int64 ``(k,)``; block-seeded."""
    if not 0 <= start <= stop:
        raise UsageError(f"bad sample range {start}:{stop}.")
    parts: dict[str, list[np.ndarray]] = {"image": [], "palette": [], "phrasing": []}
    for blk in range(start // BLOCK_SIZE, -(-stop // BLOCK_SIZE)):
        d = _draw_block(spec, seed, blk)
        lo, hi = max(start, blk * BLOCK_SIZE), min(stop, (blk + 1) * BLOCK_SIZE)
        for k in parts:
            parts[k].append(d[k][lo - blk * BLOCK_SIZE : hi - blk * BLOCK_SIZE])
    if not parts["image"]:
        return {
            "image": np.zeros((0, len(IMAGE_COLUMNS))),
            "palette": np.zeros(0, np.int64),
            "phrasing": np.zeros(0, np.int64),
        }
    return {k: np.concatenate(v) for k, v in parts.items()}


def _lin(u: np.ndarray, lo_hi: tuple[float, float]) -> np.ndarray:
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    return lo + u * (hi - lo)


def multimodal_scene_latents(spec: MultimodalSpec, image: np.ndarray) -> np.ndarray:
    """Image latents ``(N, 11)`` -> scene-unit latents ``(N, 10)`` (``FACTOR_NAMES`` order:
    positions, rotations and the spotlight angle in radians, hues as angles ``2 pi h``)."""
    z = np.asarray(image, np.float64)
    if z.ndim != 2 or z.shape[1] != len(IMAGE_COLUMNS):
        raise UsageError(f"image latents must be (N, {len(IMAGE_COLUMNS)}), got {z.shape}.")
    grid = np.asarray(spec.grid, np.float64)
    xi, yi = z[:, 1].astype(np.int64), z[:, 2].astype(np.int64)
    if (xi < 0).any() or (xi >= len(grid)).any() or (yi < 0).any() or (yi >= len(grid)).any():
        raise UsageError("grid positions outside the preset's grid.")
    out = np.empty((len(z), 10), np.float64)
    out[:, 0] = grid[yi]  # Blender x: the image's vertical (generate_images.py line 316)
    out[:, 1] = grid[xi]  # Blender y: the image's horizontal (line 317)
    out[:, 2] = z[:, 3]
    rot = np.radians(np.asarray(spec.rotation_range_deg, np.float64))
    out[:, 3:6] = _lin(z[:, 4:7], (rot[0], rot[1]))
    spot = np.radians(np.asarray(spec.spot_angle_range_deg, np.float64))
    out[:, 6] = _lin(z[:, 8], (spot[0], spot[1]))
    turn = 2.0 * math.pi
    out[:, 7] = turn * z[:, 7]
    out[:, 8] = turn * _lin(z[:, 9], spec.light_hue_range)
    out[:, 9] = turn * _lin(z[:, 10], spec.light_hue_range)
    return out
