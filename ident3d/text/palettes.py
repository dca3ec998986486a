"""Colour palettes and the nearest colour name, as the Multimodal3DIdent generator does it.

The palettes are matplotlib's named-colour lists (``matplotlib.colors.TABLEAU_COLORS``,
``CSS4_COLORS``, ``XKCD_COLORS``; names as matplotlib spells them, ``tab:`` and ``xkcd:``
prefixes included). :meth:`Palette.nearest` reproduces ``ColorPalette.nearest_neighbor`` of
the generator (Multimodal3DIdent ``generate_latents.py`` lines 14-44): the Euclidean nearest
RGB value of the palette, where colours of equal RGB keep the *last* name (the dict
``{rgb: name}`` the original builds) and the first of equally near colours wins (its strict
``<`` loop). :func:`color_index_table` is the generator's colour-name index (lines 105-113):
the position of a name in the sorted list of the names of all three palettes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from ident3d.errors import UsageError

#: Palette names a preset may list, in the generator's order (generate_latents.py line 104).
PALETTE_NAMES = ("tableau", "css4", "xkcd")
_MPL_NAMES = {"tableau": "TABLEAU_COLORS", "css4": "CSS4_COLORS", "xkcd": "XKCD_COLORS"}


def check_palettes(value: Any) -> str | None:
    """Schema checker of a preset's palette list: a non-empty list of known names."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return f"must be a non-empty list of palette names, got {value!r}"
    for v in value:
        if v not in PALETTE_NAMES:
            return f"names unknown palette {v!r} (known: {', '.join(PALETTE_NAMES)})"
    if len(set(value)) != len(value):
        return f"lists a palette twice: {value!r}"
    return None


def palette_colors(name: str) -> dict[str, str]:
    """``{colour name: hex}`` of a palette, in matplotlib's order."""
    if name not in _MPL_NAMES:
        raise UsageError(f"unknown palette {name!r} (known: {', '.join(PALETTE_NAMES)}).")
    import matplotlib.colors as mcolors

    return dict(getattr(mcolors, _MPL_NAMES[name]))


@dataclass(frozen=True)
class Palette:
    """A palette's distinct RGB values (first-occurrence order) and the name each one keeps."""

    name: str
    rgb: np.ndarray  # (K, 3) float64 in [0, 1]
    names: tuple[str, ...]

    @classmethod
    def load(cls, name: str) -> Palette:
        return _load_palette(name)

    def nearest(self, rgb: np.ndarray) -> np.ndarray:
        """Indices into :attr:`names` of the nearest colours of ``rgb`` ``(N, 3)``."""
        rgb = np.asarray(rgb, np.float64).reshape(-1, 3)
        out = np.empty(len(rgb), np.int64)
        for a in range(0, len(rgb), 4096):
            d = rgb[a : a + 4096, None, :] - self.rgb[None, :, :]
            dist = np.sqrt(np.einsum("nkc,nkc->nk", d, d))
            out[a : a + 4096] = np.argmin(dist, axis=1)  # first minimum, as the strict < loop
        return out

    def nearest_names(self, rgb: np.ndarray) -> list[str]:
        return [self.names[k] for k in self.nearest(rgb)]


@cache
def _load_palette(name: str) -> Palette:
    import matplotlib.colors as mcolors

    rgb_to_name: dict[tuple[float, float, float], str] = {}
    for k, v in palette_colors(name).items():
        rgb_to_name[tuple(mcolors.to_rgb(v))] = k  # a later name of equal RGB replaces it
    keys = list(rgb_to_name)
    return Palette(name, np.array(keys, np.float64), tuple(rgb_to_name[k] for k in keys))


@cache
def color_index_table(palettes: Sequence[str] = PALETTE_NAMES) -> tuple[str, ...]:
    """The sorted distinct colour names of ``palettes``: name ``k`` has colour index ``k``
    (the generator's ``colorname_to_index`` over its three palettes)."""
    names: list[str] = []
    for p in palettes:
        names.extend(palette_colors(p))
    return tuple(sorted(set(names)))


def color_indices(names: Sequence[str], palettes: Sequence[str] = PALETTE_NAMES) -> np.ndarray:
    """Colour indices of ``names`` in :func:`color_index_table`."""
    table = {n: i for i, n in enumerate(color_index_table(tuple(palettes)))}
    try:
        return np.array([table[n] for n in names], np.int64)
    except KeyError as exc:
        raise UsageError(f"colour name {exc.args[0]!r} is in none of the palettes.") from None
