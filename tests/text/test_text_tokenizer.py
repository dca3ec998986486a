"""ident3d.text.tokenizer: the data-free stand-in for NLTK's word_tokenize."""

from __future__ import annotations

import pytest

from ident3d.scenes import load_preset
from ident3d.text.palettes import PALETTE_NAMES, palette_colors
from ident3d.text.tokenizer import sentences, word_tokenize


def test_tokens_of_a_caption() -> None:
    s = 'A hare of "xkcd:robin\'s egg" color is visible, positioned at the top-right of the image.'
    assert word_tokenize(s) == [
        "A", "hare", "of", "``", "xkcd", ":", "robin", "'s", "egg", "''", "color", "is",
        "visible", ",", "positioned", "at", "the", "top-right", "of", "the", "image", ".",
    ]  # fmt: skip
    assert sentences("One.\nTwo.\n\n") == ["One.", "Two."]


def test_same_tokens_as_nltk_on_every_colour_and_template() -> None:
    nltk_tokenize = pytest.importorskip("nltk.tokenize")
    mm = load_preset("multimodal3dident").data["multimodal"]
    names = [n for p in PALETTE_NAMES for n in palette_colors(p)]
    checked = 0
    for t, template in enumerate(mm["templates"]):
        for i, name in enumerate(names):
            s = template.format(
                SHAPE=mm["shape_names"][i % 7], COLOR=name,
                XPOS=mm["x_names"][i % 3], YPOS=mm["y_names"][(i + t) % 3],
            )  # fmt: skip
            # preserve_line: NLTK's Treebank word rules without Punkt (which needs a download)
            assert word_tokenize(s) == nltk_tokenize.word_tokenize(s, preserve_line=True), s
            checked += 1
    assert checked == 5 * len(names)
