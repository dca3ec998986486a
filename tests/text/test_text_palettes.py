"""ident3d.text.palettes: the generator's nearest colour name and colour index."""

from __future__ import annotations

import colorsys

import matplotlib.colors as mcolors
import numpy as np
import pytest

from ident3d.errors import UsageError
from ident3d.text.palettes import (
    PALETTE_NAMES,
    Palette,
    check_palettes,
    color_index_table,
    color_indices,
    palette_colors,
)


def _generator_nearest(palette: dict[str, str], rgb: tuple[float, float, float]) -> str:
    """The generator's ColorPalette.nearest_neighbor (generate_latents.py lines 14-44)."""
    rgb_to_name = {mcolors.to_rgb(v): k for k, v in palette.items()}
    arr = np.array(rgb)
    best, nn = np.inf, None
    for key in rgb_to_name:
        d = np.linalg.norm(np.array(key) - arr)
        if d < best:
            best, nn = d, key
    return rgb_to_name[nn]


@pytest.mark.parametrize("name", PALETTE_NAMES)
def test_nearest_name_is_the_generators(name: str) -> None:
    hues = np.random.default_rng(0).random(300 if name == "xkcd" else 1000)
    rgb = np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues])
    got = Palette.load(name).nearest_names(rgb)
    want = [_generator_nearest(palette_colors(name), tuple(c)) for c in rgb]
    assert got == want


def test_palette_sizes_and_prefixes() -> None:
    assert len(palette_colors("tableau")) == 10
    assert all(k.startswith("tab:") for k in palette_colors("tableau"))
    assert all(k.startswith("xkcd:") for k in palette_colors("xkcd"))
    # CSS4 "aqua" and "cyan" share #00FFFF: the later name is kept, as in the generator's dict
    css = Palette.load("css4")
    assert "cyan" in css.names and "aqua" not in css.names
    assert css.nearest_names(np.array([[0.0, 1.0, 1.0]])) == ["cyan"]


def test_color_index_is_the_sorted_position_over_all_palettes() -> None:
    table = color_index_table()
    assert list(table) == sorted(table)
    every = set()
    for p in PALETTE_NAMES:
        every |= set(palette_colors(p))
    assert len(table) == len(every)
    assert color_indices(["tab:blue", table[0]]).tolist() == [table.index("tab:blue"), 0]
    with pytest.raises(UsageError, match="none of the palettes"):
        color_indices(["no such colour"])


def test_unknown_palette() -> None:
    assert "unknown palette 'rainbow'" in check_palettes(["css4", "rainbow"])
    assert check_palettes(["css4", "css4"]) is not None
    assert check_palettes([]) is not None
    assert check_palettes(list(PALETTE_NAMES)) is None
    with pytest.raises(UsageError, match="unknown palette"):
        palette_colors("rainbow")
