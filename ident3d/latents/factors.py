"""The factor table: the one place that defines the 10 factors of 3DIdent, in column
order, and :func:`parse_dims` (factor subsets by index or name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ident3d.errors import UsageError


@dataclass(frozen=True)
class Factor:
    """One ground-truth factor of 3DIdent.

    ``scene_unit`` is the unit of the scene-units latent column (``latents.npy`` in the
    original layout); how a raw value maps to it depends on the latent mode
    (:class:`LatentMapping`), whose parameters come from the scene preset.
    """

    index: int
    name: str
    kind: str  # "position" | "rotation" | "angle" | "hue"
    scene_unit: str
    description: str


FACTORS: tuple[Factor, ...] = (
    Factor(0, "pos_x", "position", "scene units", "object position x"),
    Factor(1, "pos_y", "position", "scene units", "object position y"),
    Factor(2, "pos_z", "position", "scene units", "object position z (lifted by z_lift * S)"),
    Factor(3, "rot_alpha", "rotation", "rad", "object rotation alpha (XYZ Euler, first)"),
    Factor(4, "rot_beta", "rotation", "rad", "object rotation beta (XYZ Euler, second)"),
    Factor(5, "rot_gamma", "rotation", "rad", "object rotation gamma (XYZ Euler, third)"),
    Factor(6, "spot_theta", "angle", "rad", "spotlight angle on its circle around the z axis"),
    Factor(7, "hue_object", "hue", "rad", "object hue angle: HSV hue = angle / (2 pi)"),
    Factor(8, "hue_spot", "hue", "rad", "spotlight hue angle: HSV hue = angle / (2 pi)"),
    Factor(9, "hue_background", "hue", "rad", "ground hue angle: HSV hue = angle / (2 pi)"),
)
FACTOR_NAMES: tuple[str, ...] = tuple(f.name for f in FACTORS)
N_FACTORS = len(FACTORS)


def factor_table() -> list[dict[str, Any]]:
    """The factor table as JSON-ready dicts (for manifests and reports); every factor is
    ``"type": "continuous"`` here (an SCM can make some discrete, see
    :func:`ident3d.latents.structured.annotate_factor_table`)."""
    return [
        {
            "index": f.index,
            "name": f.name,
            "kind": f.kind,
            "raw_range": [-1.0, 1.0],
            "scene_unit": f.scene_unit,
            "description": f.description,
            "type": "continuous",
        }
        for f in FACTORS
    ]


def parse_dims(spec: str | Sequence[int | str] | None, dim: int) -> tuple[int, ...] | None:
    """Parse a factor subset: indices or factor names, comma-separated or a sequence.

    ``None``/``"all"`` means every coordinate. Ranges like ``"0-2"`` are accepted.
    """
    if spec is None:
        return None
    items: list[str | int]
    if isinstance(spec, str):
        if spec.strip().lower() in ("", "all"):
            return None
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    out: list[int] = []
    for item in items:
        if isinstance(item, str) and item in FACTOR_NAMES:
            out.append(FACTOR_NAMES.index(item))
        elif isinstance(item, str) and "-" in item.lstrip("-"):
            a, b = item.split("-", 1)
            try:
                out.extend(range(int(a), int(b) + 1))
            except ValueError:
                raise UsageError(f"bad factor range {item!r} in dims") from None
        else:
            try:
                out.append(int(item))
            except (TypeError, ValueError):
                raise UsageError(
                    f"unknown factor {item!r} in dims (use indices or one of "
                    f"{', '.join(FACTOR_NAMES)})"
                ) from None
    for i in out:
        if not 0 <= i < dim:
            raise UsageError(f"factor index {i} in dims is out of range for dimension {dim}")
    if not out:
        raise UsageError("dims selects no factor")
    return tuple(sorted(set(out)))
