"""The original 3DIdent layout: ``raw_latents.npy``, optional ``latents.npy`` (scene units) and
``images/<i>.png`` in one folder."""

from __future__ import annotations

from pathlib import Path

from ident3d.store.layouts.common import _load_parts, _SourcePart

LAYOUT = "3dident"


def is_3dident(src: Path) -> bool:
    """Whether ``src`` holds a 3DIdent folder (it has ``raw_latents.npy``)."""
    return (src / "raw_latents.npy").exists()


def scan_3dident(src: Path) -> tuple[str, Path, list[_SourcePart]]:
    """``("3dident", src, [the one part])``."""
    names: list[tuple[int | None, str, str, str]] = [
        (None, "raw_latents.npy", "latents.npy", "images")
    ]
    return LAYOUT, src, _load_parts(src, names)
