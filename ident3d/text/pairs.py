"""The text side of image/text samples: colour names, text latents and captions.

From the image latents and the per-sample palette and phrasing draws of
:func:`ident3d.latents.multimodal.sample_multimodal`: the colour name is the nearest name to
``HSV(hue, 1, 1)`` in the sample's palette (generate_latents.py lines 59-76, ``colorsys`` with
s = v = 1), its index the position in the sorted names of *all* the preset's palettes
(lines 105-113), and the caption the sample's template filled in (generate_text.py 63-75).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ident3d.latents.modes import hsv_to_rgb
from ident3d.latents.multimodal import TEXT_INT_COLUMNS, MultimodalSpec, sample_multimodal
from ident3d.text.captions import make_captions
from ident3d.text.palettes import Palette, color_indices


@dataclass(frozen=True)
class TextSamples:
    """Captions and text latents of a range of samples."""

    captions: list[str]
    color_names: list[str]
    text_latents: np.ndarray  # int64 (k, 7): TEXT_INT_COLUMNS


def color_names(spec: MultimodalSpec, hue: np.ndarray, palette: np.ndarray) -> list[str]:
    """Name of the colour ``HSV(hue, 1, 1)`` in palette ``spec.palettes[palette[i]]``."""
    rgb = hsv_to_rgb(np.asarray(hue, np.float64), 1.0, 1.0, "colorsys")
    out: list[str] = [""] * len(rgb)
    pal = np.asarray(palette, np.int64)
    for j, name in enumerate(spec.palettes):
        idx = np.flatnonzero(pal == j)
        if idx.size:
            for i, nm in zip(idx, Palette.load(name).nearest_names(rgb[idx]), strict=True):
                out[int(i)] = nm
    return out


def text_samples(
    spec: MultimodalSpec, image: np.ndarray, palette: np.ndarray, phrasing: np.ndarray
) -> TextSamples:
    image = np.asarray(image, np.float64)
    names = color_names(spec, image[:, 7], palette)
    index = color_indices(names, spec.palettes)
    shape, xpos, ypos = (image[:, c].astype(np.int64) for c in (0, 1, 2))
    captions = make_captions(
        spec.templates, spec.shape_names, spec.x_names, spec.y_names,
        phrasing, shape, xpos, ypos, names,
    )  # fmt: skip
    zpos = np.rint(image[:, 3]).astype(np.int64)
    table = np.column_stack([shape, xpos, ypos, zpos, index, phrasing, palette]).astype(np.int64)
    assert table.shape[1] == len(TEXT_INT_COLUMNS)
    return TextSamples(captions, names, table)


def multimodal_samples(
    spec: MultimodalSpec, start: int, stop: int, seed: int
) -> tuple[np.ndarray, TextSamples]:
    """Image latents ``(k, 11)`` and the text side of samples ``start:stop``."""
    d = sample_multimodal(spec, start, stop, seed)
    return d["image"], text_samples(spec, d["image"], d["palette"], d["phrasing"])
