"""The structured model: 3DIdentBox's laws on 100k pairs, --dims as a special case, block
seeding, the typed factor table."""

from __future__ import annotations

import numpy as np
import pytest
from latents_helpers import ks_ok
from scipy import stats

from ident3d.errors import UsageError
from ident3d.latents import (
    BLOCK_SIZE,
    FACTOR_NAMES,
    Box,
    StructuredModel,
    build_structured_model,
    dims_structure,
    factor_table,
    latent_model_from_options,
    truncated_normal_mean,
)
from ident3d.scenes import load_preset

N = 100_000
BOX = load_preset("3didentbox")
OPTS = {"conditional": "normal", "sigma": 0.1, "dims": None, "marginal": "uniform"}
COL = {f: i for i, f in enumerate(FACTOR_NAMES)}


def _box(blocks: str, scm: str | None = None) -> StructuredModel:
    m = build_structured_model(
        BOX.data, BOX.path, kind="box", values=dict(OPTS), blocks=blocks, scm_file=scm
    )
    assert m is not None
    return m


def _pit_uniform(z: np.ndarray, zt: np.ndarray, sd: float) -> bool:
    """z~ ~ N(z, sd) truncated to [-1, 1]: its conditional CDF at z~ is uniform."""
    a, b = (-1 - z) / sd, (1 - z) / sd
    u = stats.truncnorm.cdf(zt, a, b, loc=z, scale=sd)
    return ks_ok(u, stats.uniform.cdf)


@pytest.mark.parametrize(
    "blocks",
    [
        "content=hues,style=positions,view=rotations",
        "content=rotations,style=hues,view=positions",
    ],
)
def test_3didentbox_part1_pairs_obey_their_blocks(blocks: str) -> None:
    m = _box(blocks)
    z = m.sample_pairs(N, 0)
    s = m.structure
    assert s is not None
    content = [COL[f] for f in s.factors("content")]
    style = [COL[f] for f in s.factors("style")]
    view = [COL[f] for f in s.factors("view")]
    # content identical across views
    assert np.array_equal(z[:, 0, content], z[:, 1, content])
    # style: s~ ~ N_t(s, 1) on [-1, 1] (the anchor uniform)
    for c in style:
        assert ks_ok(z[:, 0, c], stats.uniform(-1, 2).cdf)
        assert _pit_uniform(z[:, 0, c], z[:, 1, c], 1.0)
        assert not np.array_equal(z[:, 0, c], z[:, 1, c])
    # view-specific: view 1 [U, 0, 0], view 2 [0, 0, U]
    assert np.all(z[:, 0, view[1:]] == 0) and np.all(z[:, 1, view[:2]] == 0)
    assert ks_ok(z[:, 0, view[0]], stats.uniform(-1, 2).cdf)
    assert ks_ok(z[:, 1, view[2]], stats.uniform(-1, 2).cdf)
    # object gamma is fixed at 0 in both views
    assert np.all(z[:, :, COL["rot_gamma"]] == 0)
    # independent factors in part 1
    assert abs(np.corrcoef(z[:, 0, content[0]], z[:, 0, content[1]])[0, 1]) < 0.02


def test_3didentbox_part2_dependencies_are_the_declared_conditional_means() -> None:
    """Part 2 (--scm 3didentbox-part2): c1 ~ N_t(c2, 0.5), s3 ~ N_t(c3, 0.5),
    s1 ~ N_t(s2, 0.5); by regression on 100k anchors (binned over the parent) the child's mean
    is the truncated normal's mean; the pair laws of part 1 still hold."""
    m = _box("content=hues,style=positions,view=rotations", "3didentbox-part2")
    z = m.sample_pairs(N, 2)
    a = z[:, 0]
    edges = np.linspace(-1, 1, 11)
    for child, parent in (("hue_object", "hue_spot"), ("pos_z", "hue_background"),
                          ("pos_x", "pos_y")):  # fmt: skip
        x, y = a[:, COL[parent]], a[:, COL[child]]
        idx = np.digitize(x, edges[1:-1])
        for k in range(10):
            sel = idx == k
            want = truncated_normal_mean(x[sel], 0.5, -1.0, 1.0).mean()
            assert abs(y[sel].mean() - want) < 0.02, (child, k)
        slope = np.polyfit(x, y, 1)[0]
        assert 0.5 < slope < 0.9  # clearly dependent (truncation shrinks the slope of 1)
    # roots stay uniform; unrelated pairs stay independent
    assert ks_ok(a[:, COL["hue_spot"]], stats.uniform(-1, 2).cdf)
    assert abs(np.corrcoef(a[:, COL["hue_spot"]], a[:, COL["pos_y"]])[0, 1]) < 0.02
    c = [COL[f] for f in ("hue_object", "hue_spot", "hue_background")]
    assert np.array_equal(z[:, 0, c], z[:, 1, c])
    for f in ("pos_x", "pos_y", "pos_z"):
        assert _pit_uniform(z[:, 0, COL[f]], z[:, 1, COL[f]], 1.0)
    assert m.scm is not None and m.scm.order[0] == "rot_gamma"


def test_dims_is_a_special_case_of_blocks() -> None:
    """No SCM, style = --dims, content = the rest: bit for bit today's LatentModel."""
    old = latent_model_from_options(space=Box(10), sigma=0.2, dims="hue_object,hue_spot")
    new = build_structured_model(
        load_preset("3dident").data,
        "3dident",
        kind="box",
        values={**OPTS, "sigma": 0.2, "dims": "hue_object,hue_spot"},
        blocks=None,
    )
    assert new is None  # nothing structured asked for: the old model applies unchanged
    same = StructuredModel(structure=dims_structure((7, 8)), conditional=old.conditional)
    assert np.array_equal(same.sample_pairs(20_000, 5), old.sample_pairs(20_000, 5))


def test_block_seeding_sample_i_is_independent_of_the_range() -> None:
    m = _box("content=hues,style=positions,view=rotations", "3didentbox-part2")
    whole, cls = m.sample_range_with_classes(0, BLOCK_SIZE + 50, 9)
    part = m.sample_range(BLOCK_SIZE - 10, BLOCK_SIZE + 50, 9)
    assert np.array_equal(whole[BLOCK_SIZE - 10 :], part)
    assert not cls.any()
    assert np.array_equal(
        StructuredModel.from_config(m.to_config()).sample_range(0, 100, 9), whole[:100]
    )


def test_factor_table_types_and_class_entry() -> None:
    values = dict(OPTS)
    c3 = load_preset("causal3dident")
    m = build_structured_model(c3.data, c3.path, kind="box", values=values, n_classes=3)
    assert m is not None and m.has_class
    table = m.factor_table(factor_table(), ["Teapot", "Hare", "Cow"])
    assert [r["type"] for r in table[:10]] == ["continuous"] * 10
    cls = table[10]
    assert cls["name"] == "object_class" and cls["type"] == "discrete"
    assert cls["values"] == [0, 1, 2] and cls["classes"] == ["Teapot", "Hare", "Cow"]
    box = _box("content=hues").factor_table(factor_table())
    gamma = box[COL["rot_gamma"]]
    assert gamma["type"] == "discrete" and gamma["values"] == [0.0] and gamma["fixed"]
    _, classes = m.sample_range_with_classes(0, 30_000, 0)
    assert np.allclose(np.bincount(classes) / 30_000, 1 / 3, atol=0.01)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"blocks": "content=hues", "kind": "periodic"}, "need a box-kind latent mode"),
        ({"blocks": "content=hues", "values": {**OPTS, "dims": "0"}}, "--dims and --blocks"),
        ({"blocks": "content=hues", "values": {**OPTS, "marginal": "normal"}}, "--marginal"),
        ({"blocks": "view=rotations", "scm_file": "nope.toml"}, "--scm nope.toml: file not"),
        ({"blocks": "style=hues", "values": {**OPTS, "conditional": "vmf"}}, "sphere"),
    ],
)
def test_bad_structured_options(kw: dict, message: str) -> None:
    args = {"kind": "box", "values": dict(OPTS), **kw}
    with pytest.raises(UsageError, match=message):
        build_structured_model(BOX.data, BOX.path, **args, explicit={"conditional"})


def test_view_factor_cannot_have_parents(tmp_path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[factors.rot_beta]\nlaw = "normal"\nparents = ["pos_x"]\nscale = 0.5\n')
    with pytest.raises(UsageError, match="rot_beta is view-specific"):
        _box("view=rotations", str(f))
    f.write_text("[factors.rot_beta]\nlaw = 'normal'\nparents = ['pos_x']\nscale = 0.5\nx = 1\n")
    with pytest.raises(UsageError, match=r"s.toml: factor rot_beta: unknown key 'x'"):
        _box("content=rotations", str(f))
    f.write_text("[factor.rot_beta]\n")
    with pytest.raises(UsageError, match="unknown key 'factor'"):
        _box("content=rotations", str(f))
