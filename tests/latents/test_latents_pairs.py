"""Factor blocks and their roles: parsing --blocks, the preset's block tables, --dims."""

from __future__ import annotations

import numpy as np
import pytest

from ident3d.errors import UsageError
from ident3d.latents import FACTOR_NAMES, dims_structure, parse_blocks
from ident3d.latents.pairs import check_block_table
from ident3d.scenes import load_preset

BLOCKS = load_preset("3didentbox").data["blocks"]


def test_parse_blocks_assigns_roles_and_view_laws() -> None:
    s = parse_blocks("content=hues,style=positions,view=rotations", BLOCKS)
    assert s.factors("content") == ("hue_object", "hue_spot", "hue_background")
    assert s.factors("view") == ("rot_alpha", "rot_beta", "spot_theta")
    assert [FACTOR_NAMES[i] for i in s.style_dims(["rot_gamma"])] == ["pos_x", "pos_y", "pos_z"]
    assert s.aliases()["style.3"] == "pos_z" and s.aliases()["view.1"] == "rot_alpha"
    view = s.blocks[2]
    assert view.view_laws == (("uniform", 0.0, 0.0), (0.0, 0.0, "uniform"))
    assert s.to_manifest()[0] == {
        "name": "hues",
        "role": "content",
        "factors": ["hue_object", "hue_spot", "hue_background"],
    }
    two = parse_blocks("content=hues+positions", BLOCKS)
    assert len(two.factors("content")) == 6


def test_view_laws_apply_per_view() -> None:
    s = parse_blocks("view=rotations", BLOCKS)
    pairs = np.full((5000, 2, 10), 0.7)
    s.apply_views(pairs, np.random.default_rng(0))
    a, b = pairs[:, 0], pairs[:, 1]
    assert np.all(a[:, 4] == 0) and np.all(a[:, 6] == 0) and np.all(b[:, 3] == 0)
    assert a[:, 3].std() > 0.5 and b[:, 6].std() > 0.5 and np.all(pairs[:, :, 0] == 0.7)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("content=hue", "unknown block 'hue'"),
        ("contents=hues", "ROLE one of content, style, view"),
        ("hues", "write ROLE=BLOCK"),
        ("content=hues,style=hues", "block hues is assigned twice"),
        ("", "--blocks is empty"),
    ],
)
def test_bad_blocks_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_blocks(spec, BLOCKS)


def test_block_tables_are_checked() -> None:
    with pytest.raises(UsageError, match="unknown key 'factor'"):
        check_block_table({"a": {"factor": ["pos_x"]}}, "p.toml")
    with pytest.raises(UsageError, match="unknown factor 'pos_w'"):
        check_block_table({"a": {"factors": ["pos_w"]}}, "p.toml")
    with pytest.raises(UsageError, match="already in block a"):
        check_block_table({"a": {"factors": ["pos_x"]}, "b": {"factors": ["pos_x"]}}, "p.toml")
    with pytest.raises(UsageError, match="view1 needs one law per factor"):
        check_block_table({"a": {"factors": ["pos_x"], "view1": [], "view2": [0]}}, "p.toml")
    with pytest.raises(UsageError, match="both view1 and view2"):
        check_block_table({"a": {"factors": ["pos_x"], "view1": [0]}}, "p.toml")
    with pytest.raises(UsageError, match="no view1/view2 laws"):
        parse_blocks("view=a", {"a": {"factors": ["pos_x"]}})
    with pytest.raises(UsageError, match="cannot be style"):
        parse_blocks("style=a", {"a": {"factors": ["object_class"]}})


def test_dims_is_style_on_the_dims_and_content_elsewhere() -> None:
    s = dims_structure((7, 8, 9))
    assert s is not None and s.factors("style") == ("hue_object", "hue_spot", "hue_background")
    assert len(s.factors("content")) == 7 and s.style_dims() == (7, 8, 9)
    assert dims_structure(None) is None
