"""The original Causal3DIdent layout: ``trainset/`` and ``testset/`` split folders (or one split
folder itself), each with ``raw_latents_<c>.npy``, optional ``latents_<c>.npy`` and
``images_<c>/<i>.png`` per object class ``c`` (:data:`CAUSAL3DIDENT_CLASSES`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ident3d.errors import DataError, UsageError
from ident3d.store.format import CAUSAL3DIDENT_CLASSES
from ident3d.store.layouts.common import _load_parts, _SourcePart

LAYOUT = "causal3dident"
_RAW_CLASS_RE = re.compile(r"^raw_latents_(\d+)\.npy$")
#: The sidecar ``ident3d export`` writes next to the class files: ``{"class_names": [...]}``.
CLASS_NAMES_FILE = "class_names.json"
_MAX_CLASSES = 10_000


def read_class_names(base: Path) -> list[str]:
    """The class names of split folder ``base``: from its :data:`CLASS_NAMES_FILE` (written by
    ``ident3d export``) when present, else Causal3DIdent's own (:data:`CAUSAL3DIDENT_CLASSES`)."""
    path = base / CLASS_NAMES_FILE
    if not path.exists():
        return list(CAUSAL3DIDENT_CLASSES)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not readable JSON: {exc}.") from None
    names = doc.get("class_names") if isinstance(doc, dict) else None
    if (
        not isinstance(names, list)
        or not 1 <= len(names) <= _MAX_CLASSES
        or not all(isinstance(x, str) and 0 < len(x) <= 200 for x in names)
    ):
        raise DataError(
            f'{path} must hold {{"class_names": [...]}}, a list of 1 to {_MAX_CLASSES} '
            f"non-empty names."
        )
    return names


def _split_dir(src: Path, split: str | None) -> Path:
    """The split folder to read: ``src`` itself when it holds classes, else ``trainset/`` or
    ``testset/`` (``split`` chooses when both exist)."""
    base = src
    if not any(_RAW_CLASS_RE.match(p.name) for p in src.iterdir()):
        splits = [s for s in ("trainset", "testset") if (src / s).is_dir()]
        if split is not None:
            want = {"train": "trainset", "test": "testset"}.get(split, split)
            if want not in ("trainset", "testset"):
                raise UsageError(f"--split must be train or test, got {split!r}.")
            if not (src / want).is_dir():
                raise DataError(f"{src} has no {want}/ folder.")
            base = src / want
        elif len(splits) == 1:
            base = src / splits[0]
        elif len(splits) == 2:
            raise UsageError(
                f"{src} holds trainset/ and testset/: choose one with --split train|test."
            )
        else:
            raise DataError(
                f"{src} is neither a 3DIdent folder (raw_latents.npy + images/) nor a "
                f"Causal3DIdent one (trainset/, testset/ or raw_latents_<c>.npy + images_<c>/)."
            )
    return base


def scan_causal3dident(src: Path, split: str | None) -> tuple[str, Path, list[_SourcePart]]:
    """``("causal3dident", split dir, one part per class in class order)``."""
    base = _split_dir(src, split)
    classes = sorted(int(m.group(1)) for p in base.iterdir() if (m := _RAW_CLASS_RE.match(p.name)))
    if not classes:
        raise DataError(f"{base} holds no raw_latents_<c>.npy files.")
    names = read_class_names(base)
    bad = [c for c in classes if c >= len(names)]
    if bad:
        raise DataError(
            f"{base} has class {bad[0]}; its classes are 0..{len(names) - 1}"
            + (f" (named in {CLASS_NAMES_FILE})." if (base / CLASS_NAMES_FILE).exists() else
               " (Causal3DIdent's; a class_names.json names others).")
        )  # fmt: skip
    names: list[tuple[int | None, str, str, str]] = [
        (c, f"raw_latents_{c}.npy", f"latents_{c}.npy", f"images_{c}") for c in classes
    ]
    return LAYOUT, base, _load_parts(base, names)
