"""Rendering a dataset with the mock renderer: complete and exact, classes, resume after a kill,
the CLI, and a failed run leaving nothing behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from render_helpers import _cli, _job, _read_all

from ident3d import render as R
from ident3d import store
from ident3d.errors import UsageError


def test_mock_dataset_is_complete_and_exact(tmp_path: Path) -> None:
    job = _job(n=10)
    s = R.render_dataset(job, tmp_path / "d", workers=0, shard_size=4, progress=False)
    assert s.complete and s.images == 20 and s.samples == 10 and s.shards == [0, 1, 2]
    assert "20 images" in s.line() and str(tmp_path / "d") in s.line()
    assert store.verify_dataset(tmp_path / "d").ok
    got = _read_all(tmp_path / "d")
    assert got.images.shape == (10, 2, 32, 32, 3)
    assert job.model is not None
    raw = job.model.sample_pairs(10, 3)
    np.testing.assert_allclose(got.raw, raw.astype(np.float32))
    np.testing.assert_allclose(got.scene, job.mapping.to_scene(raw).astype(np.float32), rtol=1e-6)
    # the two views of a pair differ (exact pairs, rendered separately)
    assert not np.array_equal(got.images[:, 0], got.images[:, 1])
    m = store.read_manifest(tmp_path / "d")
    assert m["config"]["quality"]["name"] == "fast" and m["config"]["seed"] == 3


def test_resume_after_a_kill(tmp_path: Path) -> None:
    root = tmp_path / "d"

    def killer(shard: int, done: int) -> None:
        if done >= 6:  # mid-way through shard 1 (shards of 4, chunks of 2)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        R.render_dataset(
            _job(n=12), root, workers=0, shard_size=4, chunk=2, progress=False, on_chunk=killer
        )
    m = store.read_manifest(root)
    assert [s["index"] for s in m["shards"]] == [0]  # only the finished shard counts
    assert not list(root.glob(".shard-*"))  # the half-written shard left nothing behind
    with pytest.raises(store.DataError):
        store.open_dataset(root)
    # without --resume the partial dataset is refused, with it the run completes
    with pytest.raises(UsageError, match="--resume"):
        R.render_dataset(_job(n=12), root, workers=0, shard_size=4, progress=False)
    s = R.render_dataset(_job(n=12), root, workers=0, shard_size=4, resume=True, progress=False)
    assert s.skipped_shards == [0] and s.shards == [1, 2] and s.complete
    R.render_dataset(_job(n=12), tmp_path / "ref", workers=0, shard_size=4, progress=False)
    assert np.array_equal(_read_all(root).images, _read_all(tmp_path / "ref").images)
    assert store.verify_dataset(root).ok


def test_multi_class_dataset_stores_the_class(tmp_path: Path) -> None:
    job = _job(n=30, objects=["teapot", "cube", "sphere"])
    R.render_dataset(job, tmp_path / "d", workers=0, shard_size=16, progress=False)
    ds = store.open_dataset(tmp_path / "d")
    assert ds.class_names == ["teapot", "cube", "sphere"]
    cls = ds.classes()
    assert np.array_equal(cls, R.sample_classes(3, 0, 30, 3))
    assert len(set(cls.tolist())) == 3


def test_cli_mock_render_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    args = ["render", "--out", str(out), "--n", "6", "--renderer", "mock", "--resolution",
            "32", "--quiet", "--shard-size", "4", "--singles", "--workers", "1"]  # fmt: skip
    code, stdout, err = _cli(args, capsys)
    assert code == 0, err
    assert "6 images (6 samples)" in stdout and "images/s" in stdout
    code, _, err = _cli(args, capsys)
    assert code == 2 and "--resume" in err
    code, stdout, err = _cli([*args, "--resume"], capsys)
    assert code == 0 and "0 images" in stdout and "dataset complete" in stdout


def test_a_run_failing_before_any_shard_leaves_nothing(tmp_path: Path) -> None:
    def fail(shard: int, done: int) -> None:
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        R.render_dataset(
            _job(n=8), tmp_path / "new", workers=0, chunk=2, progress=False, on_chunk=fail
        )
    assert not (tmp_path / "new").exists()
    keep = tmp_path / "keep"  # an existing, empty --out stays, empty
    keep.mkdir()
    with pytest.raises(RuntimeError):
        R.render_dataset(_job(n=8), keep, workers=0, chunk=2, progress=False, on_chunk=fail)
    assert keep.is_dir() and not list(keep.iterdir())


# ------------------------------------------------------------------ structured datasets


def test_3didentbox_dataset_records_its_structure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rendered 3didentbox part-2 dataset: stored latents obey the blocks, the manifest holds
    the typed factor table, the pair structure and the SCM, and ``ident3d info`` shows them."""
    out = tmp_path / "box"
    code, _, err = _cli(
        ["render", "--out", str(out), "--n", "40", "--preset", "3didentbox", "--renderer",
         "mock", "--quiet", "--resolution", "16", "--scm", "3didentbox-part2", "--blocks",
         "content=positions,style=rotations,view=hues", "--shard-size", "16"], capsys,
    )  # fmt: skip
    assert code == 0, err
    s = _read_all(out)
    raw = s.raw
    assert np.array_equal(raw[:, 0, :3], raw[:, 1, :3])  # content: positions
    assert np.all(raw[:, 0, 8:] == 0) and np.all(raw[:, 1, 7:9] == 0)  # view: hues
    assert not np.array_equal(raw[:, 0, 3], raw[:, 1, 3])  # style: rotations
    assert np.all(raw[:, :, 5] == 0)  # gamma fixed
    # scene units: positions x 2, angles x pi
    assert np.allclose(s.scene[:, :, :3], raw[:, :, :3] * 2.0, atol=1e-6)
    assert np.allclose(s.scene[:, :, 6], raw[:, :, 6] * np.pi, atol=1e-5)
    m = store.read_manifest(out)
    assert [b["role"] for b in m["pair_structure"]] == ["content", "style", "view"]
    assert m["pair_structure"][0] == {
        "name": "positions", "role": "content", "factors": ["pos_x", "pos_y", "pos_z"],
    }  # fmt: skip
    types = {r["name"]: r["type"] for r in m["factor_table"]}
    assert types["rot_gamma"] == "discrete" and types["pos_x"] == "continuous"
    f = m["scm"]["factors"]
    assert f["pos_x"]["parents"] == ["pos_y"]  # content c2 -> c1
    assert f["spot_theta"]["parents"] == ["pos_z"]  # c3 -> s3 (style = rotations)
    assert f["rot_alpha"]["parents"] == ["rot_beta"]  # s2 -> s1
    code, info, _ = _cli(["info", str(out)], capsys)
    assert code == 0
    assert "block        content  positions: pos_x, pos_y, pos_z" in info
    assert "scm          pos_x ~ N_t(1 pos_y, 0.5) on [-1, 1]" in info
    assert "rot_gamma [0.0] (fixed)" in info
    # same seed, same latents whatever the sharding; two --shard runs join one dataset
    again = tmp_path / "again"
    for part in ("0/2", "1/2"):
        code, _, err = _cli(
            ["render", "--out", str(again), "--n", "40", "--preset", "3didentbox", "--renderer",
             "mock", "--quiet", "--resolution", "16", "--scm", "3didentbox-part2", "--blocks",
             "content=positions,style=rotations,view=hues", "--shard-size", "7",
             "--shard", part], capsys,
        )  # fmt: skip
        assert code == 0, err
    assert np.array_equal(_read_all(again).raw, raw)


def test_images_dataset_without_structure_keeps_null_pair_structure(tmp_path: Path) -> None:
    R.render_dataset(_job(n=4, pairs=False), tmp_path / "d", workers=0, progress=False)
    m = store.read_manifest(tmp_path / "d")
    assert m["pair_structure"] is None and m["scm"] is None
    assert {r["type"] for r in m["factor_table"]} == {"continuous"}
    R.render_dataset(_job(n=4), tmp_path / "p", workers=0, progress=False)
    assert store.read_manifest(tmp_path / "p")["pair_structure"] is None  # all perturbed


def test_dims_pairs_record_style_and_content_blocks(tmp_path: Path) -> None:
    from ident3d.latents import Box, latent_model_from_options

    model = latent_model_from_options(space=Box(10), dims="hue_object,hue_spot")
    R.render_dataset(_job(n=4, model=model), tmp_path / "d", workers=0, progress=False)
    blocks = store.read_manifest(tmp_path / "d")["pair_structure"]
    assert blocks[0] == {"name": "dims", "role": "style", "factors": ["hue_object", "hue_spot"]}
    assert blocks[1]["role"] == "content" and len(blocks[1]["factors"]) == 8


def test_causal3dident_classes_are_a_latent_and_load_with_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """causal3dident: the SCM draws the class (uniform over the --object classes); the class
    column holds it, the factor table names the classes, ImageDataset returns the labels."""
    from ident3d.data import ImageDataset
    from ident3d.latents import build_structured_model
    from ident3d.scenes import load_preset

    out = tmp_path / "c3"
    code, _, err = _cli(
        ["render", "--out", str(out), "--n", "30", "--preset", "causal3dident", "--renderer",
         "mock", "--quiet", "--resolution", "16", "--singles", "--object", "teapot",
         "--object", "cube", "--object", "cone"], capsys,
    )  # fmt: skip
    assert code == 0, err
    m = store.read_manifest(out)
    assert m["class_names"] == ["teapot", "cube", "cone"]
    assert m["factor_table"][-1]["classes"] == ["teapot", "cube", "cone"]
    assert m["scm"]["factors"]["object_class"]["law"] == "categorical"
    from ident3d.eval.encode import factor_names

    assert factor_names(10, m["factor_table"])[:2] == ["pos_x", "pos_y"]  # class row skipped
    p = load_preset("causal3dident")
    opts = {"conditional": "normal", "sigma": 0.1, "dims": None, "marginal": "uniform"}
    model = build_structured_model(p.data, p.path, kind="box", values=opts, n_classes=3)
    assert model is not None
    want = model.sample_range_with_classes(0, 30, 0, pairs=False)[1]
    s = _read_all(out)
    assert np.array_equal(s.cls, want) and len(set(want.tolist())) == 3
    ds = ImageDataset(out)
    x, _z, c = ds[4]
    assert c == int(want[4]) and tuple(x.shape) == (3, 16, 16)


@pytest.mark.parametrize("objects", [["teapot"], ["teapot", "cube"]], ids=["one", "classes"])
def test_a_dataset_from_before_factor_types_still_resumes(tmp_path: Path, objects) -> None:
    """A partial dataset whose factor table predates the `type` annotations (and the class
    row) is the same plan as today's: --resume continues it, a different plan is refused."""
    import json

    def killer(shard: int, done: int) -> None:
        if done >= 4:
            raise KeyboardInterrupt

    root = tmp_path / "d"
    with pytest.raises(KeyboardInterrupt):
        R.render_dataset(_job(n=12, objects=objects), root, workers=0, shard_size=4, chunk=2,
                         progress=False, on_chunk=killer)  # fmt: skip
    path = root / "manifest.json"
    m = json.loads(path.read_text())
    assert m["factor_table"] and all("type" in r for r in m["factor_table"])
    m["factor_table"] = [
        {k: v for k, v in r.items() if k != "type"}
        for r in m["factor_table"]
        if r.get("column") != "class"
    ]
    path.write_text(json.dumps(m))
    with pytest.raises(UsageError, match="different"):
        R.render_dataset(_job(n=12, objects=objects, seed=4), root, workers=0, shard_size=4,
                         resume=True, progress=False)  # fmt: skip
    s = R.render_dataset(_job(n=12, objects=objects), root, workers=0, shard_size=4,
                         resume=True, progress=False)  # fmt: skip
    assert s.complete and s.skipped_shards == [0]
    R.render_dataset(_job(n=12, objects=objects), tmp_path / "ref", workers=0, shard_size=4,
                     progress=False)  # fmt: skip
    assert np.array_equal(_read_all(root).images, _read_all(tmp_path / "ref").images)
