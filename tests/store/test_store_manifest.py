"""Tests of ident3d.store.manifest: creating datasets, commits under the lock, completeness."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import h5py
import numpy as np
import pytest
from store_helpers import H, W, _cli, _data, _make

from ident3d import store
from ident3d.errors import DataError, UsageError


def test_create_dataset_reuse_conflict_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make(root)
    again = store.create_dataset(root, "images", 25, 10, H, W, 10, {"preset": "test", "seed": 1})
    assert len(again["shards"]) == 3  # reused for resume, shards kept
    with pytest.raises(UsageError, match="config"):
        store.create_dataset(root, "images", 25, 10, H, W, 10, {"preset": "test", "seed": 2})
    with pytest.raises(UsageError, match="shard_size"):
        store.create_dataset(root, "images", 25, 5, H, W, 10, {"preset": "test", "seed": 1})
    fresh = store.create_dataset(root, "images", 25, 5, H, W, 10, {}, overwrite=True)
    assert fresh["shards"] == [] and fresh["num_shards"] == 5
    assert not list(root.glob("shard-*.h5"))
    with pytest.raises(UsageError):
        store.create_dataset(tmp_path / "x", "triples", 5, 5, H, W, 10, {})
    with pytest.raises(UsageError):
        store.create_dataset(tmp_path / "x", "images", 0, 5, H, W, 10, {})
    with pytest.raises(UsageError, match="JSON"):
        store.create_dataset(tmp_path / "x", "images", 5, 5, H, W, 10, {"f": object()})


def test_incomplete_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _data(25)
    m = store.create_dataset(root, "images", 25, 10, H, W, 10, {})
    with store.ShardWriter(root, 1, 10, 10, "images", H, W, 10) as w:
        w.write_batch(0, images[10:20], raw[10:20], scene[10:20])
    assert store.missing_shards(root) == [0, 2]
    assert not store.is_complete(store.read_manifest(root))
    with pytest.raises(DataError, match="incomplete"):
        store.open_dataset(root)
    ds = store.open_dataset(root, allow_incomplete=True)
    assert len(ds) == 25 and ds.missing_shards() == [0, 2]
    np.testing.assert_array_equal(ds.read(12).images, images[12])
    with pytest.raises(DataError, match="shard 0"):
        ds.read(3)
    with pytest.raises(DataError):
        ds.raw_latents()
    assert m["num_shards"] == 3


def _write_shards(root: str, shards: list[int]) -> None:
    images, raw, scene = _data(80, seed=3)
    m = store.read_manifest(root)
    for k in shards:
        a, c = store.shard_range(m, k)
        with store.ShardWriter(root, k, a, c, "images", H, W, 10) as w:
            w.write_batch(0, images[a : a + c], raw[a : a + c], scene[a : a + c])


def test_two_processes_write_one_dataset(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    store.create_dataset(root, "images", 80, 2, H, W, 10, {"run": "concurrent"})
    ctx = mp.get_context("fork")
    procs = [
        ctx.Process(target=_write_shards, args=(str(root), list(range(r, 40, 2)))) for r in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert store.missing_shards(root) == []
    report = store.verify_dataset(root)
    assert report.ok, report.lines()
    images, _, _ = _data(80, seed=3)
    np.testing.assert_array_equal(store.open_dataset(root).read_slice(0, 80).images, images)


def test_rewriting_a_shard_replaces_its_entry(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _make(root, n=20, shard_size=10)
    other = images[::-1].copy()
    with store.ShardWriter(root, 1, 10, 10, "images", H, W, 10) as w:
        w.write_batch(0, other[10:20], raw[10:20], scene[10:20])
    m = store.read_manifest(root)
    assert [e["index"] for e in m["shards"]] == [0, 1]
    assert store.verify_dataset(root).ok
    ds = store.open_dataset(root)
    np.testing.assert_array_equal(ds.read_slice(10, 20).images, other[10:20])
    np.testing.assert_allclose(
        ds.mean, np.concatenate([images[:10], other[10:20]]).reshape(-1, 3).mean(0) / 255
    )


# ----------------------------------------------------------------------------- untrusted datasets


def _rename_shard_entry(root: Path, name: str) -> None:
    m = json.loads((root / "manifest.json").read_text())
    m["shards"][0]["file"] = name
    (root / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    "name", ["../../etc/x", "/etc/passwd", "sub/shard-00000.h5", "shard-0.h5", "..", 7]
)
def test_manifest_shard_names_must_be_the_formats_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: object
) -> None:
    root = tmp_path / "a" / "ds"
    _make(root, n=20, shard_size=10)
    (tmp_path / "etc").mkdir()
    outside = tmp_path / "etc" / "x"  # where ../../etc/x leads
    outside.write_bytes((root / "shard-00000.h5").read_bytes())  # a valid shard, outside
    before = sorted(p.name for p in tmp_path.rglob("*"))
    _rename_shard_entry(root, name)  # type: ignore[arg-type]
    with pytest.raises(store.DataError, match="names shard 0 .*only shard-00000.h5 is allowed"):
        store.read_manifest(root)
    with pytest.raises(store.DataError, match="only shard-00000.h5 is allowed"):
        store.open_dataset(root)
    for cmd in (["info"], ["verify"], ["verify", "--quick"], ["export"]):
        argv = [*cmd, str(root)] + ([str(tmp_path / "exported")] if cmd == ["export"] else [])
        code, out, err = _cli(argv, capsys)
        assert code == 2, (cmd, out, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and "is allowed" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written anywhere


def test_symlinked_shard_leading_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, other = tmp_path / "ds", tmp_path / "other"
    _make(root, n=20, shard_size=10)
    _make(other, n=20, shard_size=10)
    (root / "shard-00001.h5").unlink()
    (root / "shard-00001.h5").symlink_to(other / "shard-00001.h5")
    ds = store.open_dataset(root)
    ds.read(0)  # shard 0 is a plain file
    with pytest.raises(store.DataError, match="symbolic link"):
        ds.read(15)
    for cmd in (["info"], ["verify"], ["verify", "--quick"]):
        code, out, err = _cli([*cmd, str(root)], capsys)
        assert code == 2 and "shard-00001.h5 is a symbolic link" in err, (cmd, out, err)
    code, _, err = _cli(["export", str(root), str(tmp_path / "exp")], capsys)
    assert code == 2 and "symbolic link" in err
    assert not (tmp_path / "exp").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_object_dtypes_in_a_shard_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make(root, n=10, shard_size=10)
    path = root / "shard-00000.h5"
    with h5py.File(path, "a") as f:
        del f["latents"]
        f.create_dataset("latents", data=np.array([b"x"] * 100, dtype=object).reshape(10, 10),
                         dtype=h5py.string_dtype())  # fmt: skip
    ds = store.open_dataset(root)
    with pytest.raises(store.DataError, match="latents of dtype object, which the format"):
        ds.read(0)


def test_overwrite_with_the_same_plan_starts_from_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``overwrite=True`` used to hand back the old manifest when the plan was the same, so
    `ident3d render --overwrite` of the same dataset refused ("pass ... --overwrite")."""
    root = tmp_path / "ds"
    _make(root)
    cfg = {"preset": "test", "seed": 1}
    fresh = store.create_dataset(root, "images", 25, 10, H, W, 10, cfg, overwrite=True)
    assert fresh["shards"] == [] and not list(root.glob("shard-*.h5"))
    assert store.read_manifest(root)["shards"] == []
    out = tmp_path / "render"
    args = ["render", "--out", str(out), "--n", "2", "--renderer", "mock", "--resolution", "16",
            "--quiet", "--workers", "1", "--overwrite"]  # fmt: skip
    assert _cli(args, capsys)[0] == 0
    code, _, err = _cli(args, capsys)
    assert code == 0, err
    assert store.verify_dataset(out).ok
