"""Raw latents -> scene units: :class:`LatentMapping`, one per latent mode of the original
generator (box, periodic), and the colour and angle helpers it uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ident3d.errors import UsageError
from ident3d.latents.factors import N_FACTORS
from ident3d.latents.spaces import Box, Product, Space, Sphere

HUE_MODES = ("colorsys", "wrap")


@dataclass(frozen=True)
class LatentMapping:
    """How raw latents become the 10 scene-unit factors, for one latent mode of a preset.

    ``kind = "box"`` (raw ``(N, 10)`` on ``[-1, 1]^10``): positions ``raw * position_scale``,
    the seven angles (rotations, spotlight angle, hues) ``raw * angle_scale`` radians.

    ``kind = "periodic"`` (raw ``(N, 11)``: 3 box coordinates then a unit vector in ``R^8``):
    x, y = ``raw * position_scale``; z = ``z_range[0] + (raw + 1) / 2 * (z_range[1] -
    z_range[0])``; the sphere point becomes 7 hyperspherical angles ``phi_1..phi_7``
    (``phi_k = arccos(s_k / |s_k..s_8|)``, ``phi_7`` flipped to ``2 pi - phi_7`` where
    ``s_8 <= 0`` so it lies in ``[0, 2 pi)``; see :func:`sphere_angles`), the first six doubled
    so every angle spans a full circle; they are, in order, alpha, beta, gamma, the spotlight
    angle and the object, spotlight and background hue angles.

    ``hue`` says how a hue angle becomes the HSV hue handed to ``colorsys.hsv_to_rgb``:
    ``colorsys`` passes ``angle / (2 pi)`` unchanged (the original; negative values give
    out-of-gamut colours), ``wrap`` takes it modulo 1 (always a valid colour).
    """

    mode: str
    kind: str
    position_scale: float = 3.0
    angle_scale: float = math.pi / 2
    z_range: tuple[float, float] = (0.0, 3.0)
    hue: str = "colorsys"

    def __post_init__(self) -> None:
        if self.kind not in ("box", "periodic"):
            raise UsageError(f"latent mode kind must be 'box' or 'periodic', got {self.kind!r}")
        if self.hue not in HUE_MODES:
            raise UsageError(f"hue mapping must be one of {HUE_MODES}, got {self.hue!r}")

    @property
    def raw_dim(self) -> int:
        return 10 if self.kind == "box" else 11

    def default_space(self) -> Space:
        """The raw latent space: ``[-1, 1]^10`` or ``[-1, 1]^3 x S^7``."""
        return Box(10) if self.kind == "box" else Product(Box(3), Sphere(8))

    def to_scene(self, raw: np.ndarray) -> np.ndarray:
        """``(..., raw_dim)`` raw latents -> ``(..., 10)`` scene units (angles in radians)."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.shape[-1] != self.raw_dim:
            raise UsageError(
                f"latent mode {self.mode!r} expects {self.raw_dim} raw columns, got {raw.shape[-1]}"
            )
        out = np.empty((*raw.shape[:-1], N_FACTORS))
        if self.kind == "box":
            out[..., :3] = raw[..., :3] * self.position_scale
            out[..., 3:] = raw[..., 3:] * self.angle_scale
            return out
        out[..., :2] = raw[..., :2] * self.position_scale
        lo, hi = self.z_range
        out[..., 2] = lo + (raw[..., 2] + 1.0) / 2.0 * (hi - lo)
        out[..., 3:] = sphere_angles(raw[..., 3:])
        return out

    def to_config(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "kind": self.kind,
            "position_scale": self.position_scale,
            "angle_scale": self.angle_scale,
            "z_range": list(self.z_range),
            "hue": self.hue,
        }

    @classmethod
    def from_preset_mode(cls, mode: str, cfg: dict[str, Any]) -> LatentMapping:
        """Build from a preset's ``[latents.modes.<mode>]`` table."""
        turns = cfg.get("angle_scale_turns", 0.25)
        return cls(
            mode=mode,
            kind=cfg["kind"],
            position_scale=float(cfg.get("position_scale", 3.0)),
            angle_scale=float(turns) * 2.0 * math.pi,
            z_range=tuple(float(x) for x in cfg.get("z_range", (0.0, 3.0))),  # type: ignore[arg-type]
            hue=cfg.get("hue", "colorsys"),
        )


def sphere_angles(s: np.ndarray) -> np.ndarray:
    """Unit vectors in ``R^d`` -> ``d - 1`` angles, as the original generator computes them.

    This is cl-ica's ``cartesian_to_spherical`` followed by its doubling step:
    ``phi_k = arccos(s_k / |s_k..s_d|)`` in ``[0, pi]`` for every ``k = 1..d-1`` (a zero tail
    norm counts as 1); the last one is flipped to ``2 pi - phi`` where ``s_d <= 0``, so it lies
    in ``[0, 2 pi)`` (not ``(-pi, pi]``); then all but the last are doubled to ``[0, 2 pi]``.
    Checked against the original's own scene latents in ``reference/orig-renders/periodic``.
    """
    s = np.asarray(s, dtype=np.float64)
    d = s.shape[-1]
    # tail norms |s_k..s_d| for k = 1..d
    tail = np.sqrt(np.cumsum(s[..., ::-1] ** 2, axis=-1)[..., ::-1])
    tail = np.where(tail == 0.0, 1.0, tail)
    phi = np.arccos(np.clip(s[..., : d - 1] / tail[..., : d - 1], -1.0, 1.0))
    last = phi[..., d - 2]
    phi[..., d - 2] = np.where(s[..., d - 1] <= 0.0, 2.0 * math.pi - last, last)
    phi[..., : d - 2] *= 2.0
    return phi


def hsv_to_rgb(h: np.ndarray, s: float, v: float, mode: str = "colorsys") -> np.ndarray:
    """Vectorised ``colorsys.hsv_to_rgb`` (``mode="colorsys"``: bit-for-bit the same, negative
    hues included) or with the hue wrapped into ``[0, 1)`` first (``mode="wrap"``)."""
    h = np.asarray(h, dtype=np.float64)
    if mode == "wrap":
        h = np.mod(h, 1.0)
    elif mode != "colorsys":
        raise UsageError(f"hue mapping must be one of {HUE_MODES}, got {mode!r}")
    if s == 0.0:
        return np.stack([np.full_like(h, v)] * 3, axis=-1)
    i = np.trunc(h * 6.0)  # int() truncates towards zero, as colorsys assumes
    f = h * 6.0 - i
    p = np.full_like(h, v * (1.0 - s))
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    vv = np.full_like(h, v)
    i = np.mod(i, 6).astype(np.int64)
    table = np.stack(
        [
            np.stack([vv, t, p], -1),
            np.stack([q, vv, p], -1),
            np.stack([p, vv, t], -1),
            np.stack([p, q, vv], -1),
            np.stack([t, p, vv], -1),
            np.stack([vv, p, q], -1),
        ],
        axis=0,
    )
    return np.take_along_axis(table, i[None, ..., None].repeat(3, -1), axis=0)[0]
