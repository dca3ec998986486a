"""ident3d.text.pairs: captions and text latents agree with the image latents."""

from __future__ import annotations

import colorsys

import numpy as np

from ident3d.latents.multimodal import TEXT_INT_COLUMNS, MultimodalSpec
from ident3d.scenes import load_preset
from ident3d.text.pairs import multimodal_samples
from ident3d.text.palettes import Palette, color_index_table


def test_captions_name_shape_cell_and_nearest_colour() -> None:
    spec = MultimodalSpec.from_preset(load_preset("multimodal3dident").data)
    image, text = multimodal_samples(spec, 0, 400, seed=11)
    col = {c: i for i, c in enumerate(TEXT_INT_COLUMNS)}
    table = color_index_table()
    seen_templates = set()
    for i, cap in enumerate(text.captions):
        t = text.text_latents[i]
        shape, x, y = (int(v) for v in image[i, :3])
        assert (t[col["object_shape"]], t[col["object_xpos"]], t[col["object_ypos"]]) == (
            shape, x, y)  # fmt: skip
        assert f"{spec.y_names[y]}-{spec.x_names[x]}" in cap
        assert (
            cap.rstrip(".").endswith(spec.shape_names[shape])
            or f" {spec.shape_names[shape]} " in cap
        )
        name = text.color_names[i]
        assert f'"{name}"' in cap and table[t[col["object_color_index"]]] == name
        pal = Palette.load(spec.palettes[t[col["palette"]]])
        rgb = np.array([colorsys.hsv_to_rgb(image[i, 7], 1.0, 1.0)])
        assert pal.nearest_names(rgb) == [name]
        assert cap == spec.templates[t[col["text_phrasing"]]].format(
            SHAPE=spec.shape_names[shape], COLOR=name, XPOS=spec.x_names[x], YPOS=spec.y_names[y]
        )
        seen_templates.add(int(t[col["text_phrasing"]]))
    assert seen_templates == set(range(5))
    assert set(text.text_latents[:, col["palette"]].tolist()) == {0, 1, 2}
