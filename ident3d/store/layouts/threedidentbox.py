"""The 3DIdentBox layout (alicebizeul/3DIdentBox README): pairs as two views,
``samples/m1/<i>.png`` and ``samples/m2/<i>.png`` (view 1, the anchors, and view 2) with
``factors/m1|m2/raw_latents.npy`` and ``factors/m1|m2/latents.npy``; row ``i`` of ``m1`` and
row ``i`` of ``m2`` form pair ``i``. One dataset folder (e.g. ``hues_positions_rotations``,
named content_style_view) holds one split."""

from __future__ import annotations

from pathlib import Path

from ident3d.errors import DataError
from ident3d.store.layouts.common import _load_parts, _SourcePart

LAYOUT = "3didentbox"
VIEWS = ("m1", "m2")


def is_3didentbox(src: Path) -> bool:
    """Whether ``src`` holds a 3DIdentBox folder (``samples/m1`` and ``factors/m1``)."""
    return (src / "samples" / "m1").is_dir() and (src / "factors" / "m1").is_dir()


def scan_3didentbox(src: Path) -> tuple[str, Path, list[_SourcePart]]:
    """``("3didentbox", src, [view m1, view m2])``: both views with the same rows and columns."""
    names: list[tuple[int | None, str, str, str]] = [
        (None, f"factors/{v}/raw_latents.npy", f"factors/{v}/latents.npy", f"samples/{v}")
        for v in VIEWS
    ]
    for v in VIEWS:
        if not (src / "samples" / v).is_dir():
            raise DataError(f"{src / 'samples' / v} is missing: a 3DIdentBox pair needs m1 and m2.")
    parts = _load_parts(src, names)
    a, b = parts
    if a.raw.shape != b.raw.shape:
        raise DataError(
            f"{a.raw_path} has shape {a.raw.shape} but {b.raw_path} has {b.raw.shape}; the two "
            "views must hold the same pairs."
        )
    if (a.scene is None) != (b.scene is None):
        raise DataError(f"{src}/factors: latents.npy is in one view folder only.")
    return LAYOUT, src, parts
