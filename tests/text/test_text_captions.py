"""ident3d.text.captions: templates and captions."""

from __future__ import annotations

import numpy as np
import pytest

from ident3d.errors import UsageError
from ident3d.scenes import load_preset
from ident3d.text.captions import check_templates, make_captions, template_problem

GENERATOR_PHRASES = [  # generate_text.py lines 27-32, verbatim
    'A {SHAPE} of "{COLOR}" color is visible, positioned at the {YPOS}-{XPOS} of the image.',
    'A "{COLOR}" {SHAPE} is at the {YPOS}-{XPOS} of the image.',
    'The {YPOS}-{XPOS} of the image shows a "{COLOR}" colored {SHAPE}.',
    'At the {YPOS}-{XPOS} of the picture is a {SHAPE} in "{COLOR}" color.',
    'At the {YPOS}-{XPOS} of the image, there is a "{COLOR}" object in the form of a {SHAPE}.',
]


def test_preset_holds_the_generators_templates_and_words() -> None:
    mm = load_preset("multimodal3dident").data["multimodal"]
    assert mm["templates"] == GENERATOR_PHRASES
    assert mm["shape_names"] == ["teapot", "hare", "dragon", "cow", "armadillo", "horse", "head"]
    assert mm["x_names"] == ["left", "center", "right"]
    assert mm["y_names"] == ["top", "mid", "bottom"]
    assert mm["palettes"] == ["tableau", "css4", "xkcd"]


def test_template_checks() -> None:
    assert template_problem(GENERATOR_PHRASES[0]) is None
    assert "lacks the slot {COLOR}" in template_problem("A {SHAPE} at {YPOS}-{XPOS}.")
    assert "unknown slot {SIZE}" in template_problem("{SIZE} {SHAPE} {COLOR} {XPOS} {YPOS}")
    assert "not a format string" in template_problem("{SHAPE {COLOR} {XPOS} {YPOS}")
    assert check_templates([]) is not None
    assert "template 1" in check_templates([GENERATOR_PHRASES[0], "no slots"])


def test_make_captions() -> None:
    caps = make_captions(
        GENERATOR_PHRASES, ["teapot", "hare"], ["left", "center", "right"],
        ["top", "mid", "bottom"], np.array([0, 4]), np.array([1, 0]), np.array([2, 0]),
        np.array([0, 1]), ["xkcd:bright red", "tab:blue"],
    )  # fmt: skip
    assert caps == [
        'A hare of "xkcd:bright red" color is visible, positioned at the top-right of the image.',
        'At the mid-left of the image, there is a "tab:blue" object in the form of a teapot.',
    ]
    with pytest.raises(UsageError, match="lacks the slot"):
        make_captions(["{SHAPE}"], ["a"], ["l"], ["t"], [0], [0], [0], [0], ["red"])
