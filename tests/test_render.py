"""The render pipeline without Blender: planning, seeds, sharding, resume, --latents, bad input.

Everything here uses :class:`ident3d.render.MockRenderer` (pure numpy), so it runs anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ident3d import render as R
from ident3d import store
from ident3d.cli import main
from ident3d.errors import UsageError
from ident3d.latents import LatentModel
from ident3d.render import job as render_job
from ident3d.scenes import load_preset


def _job(n: int = 10, pairs: bool = True, seed: int = 3, **kw: object) -> R.RenderJob:
    preset = load_preset("3dident")
    mapping = preset.mapping("box")
    from ident3d.latents import latent_model_from_options

    model = latent_model_from_options(space=mapping.default_space(), sigma=0.1)
    args = dict(
        preset=preset,
        mode="box",
        quality="fast",
        resolution=32,
        objects=["teapot"],
        pairs=pairs,
        n=n,
        seed=seed,
        model=model,
        renderer="mock",
    )
    args.update(kw)
    return R.RenderJob(**args)  # type: ignore[arg-type]


def _read_all(root: Path) -> store.Sample:
    ds = store.open_dataset(root)
    return ds.read_slice(0, len(ds))


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


# ------------------------------------------------------------------------------ planning


def test_parse_and_select_shards() -> None:
    assert R.parse_shard(None) is None
    assert R.parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "x", "1/0", "1/2/3"):
        with pytest.raises(UsageError):
            R.parse_shard(bad)
    groups = [R.select_shards(10, (i, 3)) for i in range(3)]
    assert [k for g in groups for k in g] == list(range(10))
    assert [len(g) for g in groups] == [4, 3, 3]
    assert R.select_shards(2, (2, 3)) == []


def test_frame_seed_depends_only_on_seed_index_view() -> None:
    a = R.frame_seed(0, 5, 0)
    assert a == R.frame_seed(0, 5, 0)
    others = {R.frame_seed(0, 5, 1), R.frame_seed(0, 6, 0), R.frame_seed(1, 5, 0)}
    assert a not in others and len(others) == 3
    seeds = [R.frame_seed(7, i, v) for i in range(200) for v in range(2)]
    assert len(set(seeds)) == 400 and all(0 <= s < 2**31 for s in seeds)


def test_classes_do_not_depend_on_the_range() -> None:
    whole = R.sample_classes(7, 0, 40000, seed=2)
    assert set(np.unique(whole)) == set(range(7))
    part = R.sample_classes(7, 16000, 17000, seed=2)
    assert np.array_equal(part, whole[16000:17000])
    assert not np.array_equal(R.sample_classes(7, 0, 100, seed=3), whole[:100])
    assert (R.sample_classes(1, 0, 10, seed=0) == 0).all()


def test_job_latents_match_the_latent_model() -> None:
    job = _job(n=20)
    assert job.model is not None
    expect = job.model.sample_pairs(20, 3)
    assert np.array_equal(job.raw_range(0, 20), expect)
    assert np.array_equal(job.raw_range(7, 13), expect[7:13])
    assert job.seeds(0, 3).shape == (3, 2)


# ------------------------------------------------------------------------------ rendering


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


def test_same_seed_same_pixels_whatever_workers_and_sharding(tmp_path: Path) -> None:
    a = R.render_dataset(_job(n=9), tmp_path / "a", workers=0, shard_size=9, progress=False)
    b_root = tmp_path / "b"
    for i in range(3):  # three "machines", shard groups 0/3, 1/3, 2/3; the first with two
        # worker processes, the others in-process
        R.render_dataset(
            _job(n=9),
            b_root,
            workers=2 if i == 0 else 0,
            shard_size=2,
            shard=(i, 3),
            progress=False,
            chunk=1,
        )
    assert a.complete
    assert store.read_manifest(b_root)["num_shards"] == 5
    x, y = _read_all(tmp_path / "a"), _read_all(b_root)
    assert np.array_equal(x.images, y.images)
    assert np.array_equal(x.raw, y.raw)
    # and a different seed gives different data
    R.render_dataset(_job(n=9, seed=4), tmp_path / "c", workers=0, progress=False)
    assert not np.array_equal(_read_all(tmp_path / "c").images, x.images)


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


def test_latents_file_singles_and_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    single = rng.uniform(-1, 1, (5, 10))
    np.save(tmp_path / "z.npy", single)
    code, out, err = _cli(
        ["render", "--out", str(tmp_path / "s"), "--latents", str(tmp_path / "z.npy"),
         "--renderer", "mock", "--resolution", "24", "--quiet", "--workers", "1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "5 images" in out
    ds = store.open_dataset(tmp_path / "s")
    assert ds.kind == "images" and len(ds) == 5
    np.testing.assert_allclose(ds.raw_latents(), single.astype(np.float32))
    cfg = ds.manifest["config"]["latents_file"]
    assert cfg["sha256"] == store.sha256_file(tmp_path / "z.npy")

    pairs = rng.uniform(-1, 1, (3, 2, 10))
    np.save(tmp_path / "zz.npy", pairs)
    code, out, err = _cli(
        ["render", "--out", str(tmp_path / "p"), "--latents", str(tmp_path / "zz.npy"),
         "--renderer", "mock", "--resolution", "24", "--quiet", "--workers", "1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    ds = store.open_dataset(tmp_path / "p")
    assert ds.kind == "pairs" and len(ds) == 3
    np.testing.assert_allclose(ds.raw_latents(), pairs.astype(np.float32))


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


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "nosuchpreset"], "unknown preset"),
        (["--object", "/no/such/mesh.obj"], "mesh file not found"),
        (["--object", "banana"], "not a built-in shape"),
        (["--resolution", "5"], "--resolution 5 is impossible"),
        (["--resolution", "100000"], "impossible"),
        (["--quality", "ultra"], "unknown quality"),
        (["--mode", "spiral"], "unknown latent mode"),
        (["--shard", "3/2"], "--shard"),
        (["--conditional", "none"], "--singles"),
        (["--latents", "/no/such.npy"], "not found"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "d"
    code, _, err = _cli(
        ["render", "--out", str(out), "--n", "2", "--renderer", "mock", "--quiet", *extra], capsys
    )
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not (out / store.MANIFEST_NAME).exists()


def test_bad_latents_file_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "z.npy", np.zeros((4, 7)))
    code, _, err = _cli(
        ["render", "--out", str(tmp_path / "d"), "--latents", str(tmp_path / "z.npy"),
         "--renderer", "mock"],
        capsys,
    )  # fmt: skip
    assert code == 2 and "(N, 10)" in err


def test_a_run_failing_before_any_shard_leaves_nothing(tmp_path: Path) -> None:
    def fail(shard: int, done: int) -> None:
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError):
        R.render_dataset(
            _job(n=8), tmp_path / "new", workers=0, chunk=2, progress=False, on_chunk=fail
        )
    assert not (tmp_path / "new").exists()
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        R.render_dataset(_job(n=8), keep, workers=0, chunk=2, progress=False, on_chunk=fail)
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def test_missing_bpy_tells_how_to_install(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = render_job.importlib.util.find_spec
    monkeypatch.setattr(
        render_job.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "bpy" else real(name, *a),
    )
    code, _, err = _cli(["render", "--out", str(tmp_path / "d"), "--n", "2"], capsys)
    assert code == 2 and "pip install 'ident3d[render]'" in err
    assert not (tmp_path / "d").exists()


def test_mock_renderer_factor_effects() -> None:
    """The mock's pictures respond to the factors (so pipeline tests see real differences)."""
    preset = load_preset("3dident")
    r = R.MockRenderer(preset.data, preset.quality("fast"), 48)
    from ident3d.scenes import scene_params

    base = np.zeros((1, 10))
    moved = base.copy()
    moved[0, 1] = 2.0
    p0 = scene_params(preset, base, "box")
    p1 = scene_params(preset, moved, "box")
    a = r.render({k: v[0] for k, v in p0.items()}, 0)
    b = r.render({k: v[0] for k, v in p1.items()}, 0)
    assert a.shape == (48, 48, 3) and not np.array_equal(a, b)


def test_traverse_mock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.png"
    code, stdout, err = _cli(
        ["traverse", "--out", str(out), "--renderer", "mock", "--steps", "3",
         "--resolution", "24", "--workers", "1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert out.is_file() and "3 steps x 10 factors" in stdout
    from PIL import Image

    assert Image.open(out).size[0] > 300
    code, _, err = _cli(
        ["traverse", "--out", str(tmp_path / "t.jpg"), "--renderer", "mock"], capsys
    )
    assert code == 2 and ".png" in err


def test_traversal_latents_vary_one_factor_per_column() -> None:
    mapping = load_preset("3dident").mapping("box")
    grid, values = R.traversal_latents(mapping, 5)
    assert grid.shape == (5, 10, 10) and values.shape == (5, 10)
    for j in range(10):
        col = grid[:, j, :]
        varying = np.flatnonzero(np.ptp(col, axis=0) > 0)
        assert varying.tolist() == [j]
    assert values[0, 0] < -2.5 and values[-1, 0] > 2.5  # x spans [-3, 3] in box mode
    assert json.dumps(values.tolist())


def test_render_job_config_is_json_and_excludes_workers() -> None:
    job = _job()
    cfg = job.config()
    assert json.loads(json.dumps(cfg))["latent_model"]["conditional"]["type"] == "normal"
    assert "workers" not in cfg and "shard" not in cfg
    _ = LatentModel  # the job's model is a LatentModel
    assert isinstance(job.model, LatentModel)
