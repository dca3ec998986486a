"""The original folder layouts that ``ident3d convert`` reads and ``ident3d.data`` opens
directly, one module per layout: :mod:`~ident3d.store.layouts.threedident` (3DIdent) and
:mod:`~ident3d.store.layouts.causal3dident` (Causal3DIdent),
:mod:`~ident3d.store.layouts.threedidentbox` (3DIdentBox's m1/m2 pairs), on
:mod:`~ident3d.store.layouts.common` (parts, ``.npy`` loading, strict PNG decoding). A new
layout is a new module here plus one branch in :func:`scan_original_layout`."""

from __future__ import annotations

from pathlib import Path

from ident3d.errors import DataError
from ident3d.store.layouts.causal3dident import read_class_names, scan_causal3dident
from ident3d.store.layouts.common import _SourcePart, decode_png
from ident3d.store.layouts.threedident import is_3dident, scan_3dident
from ident3d.store.layouts.threedidentbox import is_3didentbox, scan_3didentbox


def scan_original_layout(src: Path, split: str | None) -> tuple[str, Path, list[_SourcePart]]:
    """Find the layout of ``src``: ``("3dident" | "causal3dident" | "3didentbox", split dir,
    parts)``; see ``convert_original``. 3DIdentBox's parts are its two views, m1 and m2."""
    if not src.is_dir():
        raise DataError(f"{src} is not a directory.")
    if is_3dident(src):
        return scan_3dident(src)
    if is_3didentbox(src):
        return scan_3didentbox(src)
    return scan_causal3dident(src, split)


__all__ = ["decode_png", "read_class_names", "scan_original_layout"]
