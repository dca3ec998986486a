"""Tests of the dataset store core: manifest, ShardWriter, Dataset, verify, info."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from ident3d import store
from ident3d.cli import main
from ident3d.errors import DataError, UsageError

H, W = 12, 10


def _data(n: int, kind: str = "images", raw_dim: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    lead = (n,) if kind == "images" else (n, 2)
    images = rng.integers(0, 256, (*lead, H, W, 3), dtype=np.uint8)
    raw = rng.uniform(-1, 1, (*lead, raw_dim)).astype(np.float32)
    scene = rng.normal(size=(*lead, 10)).astype(np.float32)
    return images, raw, scene


def _make(root: Path, n: int = 25, shard_size: int = 10, kind: str = "images", **kw):
    images, raw, scene = _data(n, kind)
    cls = kw.pop("cls", None)
    manifest = store.create_dataset(
        root, kind, n, shard_size, H, W, 10, {"preset": "test", "seed": 1}, **kw
    )
    for k in store.missing_shards(root):
        start, count = store.shard_range(manifest, k)
        has_class = manifest["has_class"]
        with store.ShardWriter(root, k, start, count, kind, H, W, 10, has_class=has_class) as w:
            for j in range(count):
                c = None if cls is None else int(cls[start + j])
                w.write(j, images[start + j], raw[start + j], scene[start + j], cls=c)
    return images, raw, scene


def test_roundtrip_images_and_stats(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _make(root)
    names = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert names == ["manifest.json", "shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    ds = store.open_dataset(root)
    assert (len(ds), ds.kind, ds.height, ds.width, ds.raw_dim) == (25, "images", H, W, 10)
    for i in (0, 9, 10, 24, -1):
        s = ds.read(i)
        assert s.images.dtype == np.uint8 and s.images.shape == (H, W, 3)
        np.testing.assert_array_equal(s.images, images[i])
        np.testing.assert_array_equal(s.raw, raw[i])
        np.testing.assert_array_equal(s.scene, scene[i])
        assert s.cls is None
    b = ds.read_slice(3, 22)
    np.testing.assert_array_equal(b.images, images[3:22])
    np.testing.assert_array_equal(b.raw, raw[3:22])
    assert ds.read_slice(5, 5).images.shape == (0, H, W, 3)
    np.testing.assert_allclose(ds.mean, images.reshape(-1, 3).mean(0) / 255, rtol=1e-9)
    np.testing.assert_allclose(ds.std, images.reshape(-1, 3).std(0) / 255, rtol=1e-7)
    np.testing.assert_array_equal(ds.raw_latents(), raw)
    np.testing.assert_array_equal(ds.scene_latents(), scene)
    assert [s.count for s in ds.shards()] == [10, 10, 5]
    with pytest.raises(IndexError):
        ds.read(25)
    with pytest.raises(IndexError):
        ds.read_slice(20, 26)
    m = ds.manifest
    assert m["format_version"] == store.FORMAT_VERSION and m["config"]["seed"] == 1
    assert m["versions"]["ident3d"] and m["versions"]["hdf5"]
    with h5py.File(root / "shard-00000.h5", "r") as f:
        assert f["images"].chunks == (1, H, W, 3)
        assert f["latents_raw"].dtype == np.float32 and f["latents"].shape == (10, 10)


def test_pairs_write_batch_and_classes(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    n = 17
    images, raw, scene = _data(n, "pairs", raw_dim=11)
    cls = np.arange(n) % 3
    m = store.create_dataset(
        root, "pairs", n, 8, H, W, 11, {}, compression="lz4", has_class=True,
        class_names=["a", "b", "c"],
    )  # fmt: skip
    for k in range(m["num_shards"]):
        a, c = store.shard_range(m, k)
        with store.ShardWriter(root, k, a, c, "pairs", H, W, 11, has_class=True) as w:
            w.write_batch(0, images[a : a + c], raw[a : a + c], scene[a : a + c], cls[a : a + c])
    ds = store.open_dataset(root)
    assert ds.kind == "pairs" and ds.class_names == ["a", "b", "c"]
    s = ds.read(16)
    assert s.images.shape == (2, H, W, 3) and s.raw.shape == (2, 11) and s.cls == 16 % 3
    np.testing.assert_array_equal(ds.read_slice(0, n).images, images)
    np.testing.assert_array_equal(ds.classes(), cls)
    assert store.verify_dataset(root).ok


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


def test_writer_exception_and_incomplete_shard_leave_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _data(10)
    store.create_dataset(root, "images", 10, 5, H, W, 10, {})

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom), store.ShardWriter(root, 0, 0, 5, "images", H, W, 10) as w:
        w.write(0, images[0], raw[0], scene[0])
        assert any(".tmp-" in p.name for p in root.iterdir())
        raise Boom
    with (
        pytest.raises(ValueError, match="unwritten"),
        store.ShardWriter(root, 0, 0, 5, "images", H, W, 10) as w,
    ):
        w.write(0, images[0], raw[0], scene[0])
    with (
        pytest.raises(DataError, match="NaN"),
        store.ShardWriter(root, 1, 5, 5, "images", H, W, 10) as w,
    ):
        w.write(0, images[5], np.full(10, np.nan), scene[5])
    leftovers = [
        p.name for p in root.iterdir() if p.name not in ("manifest.json", ".manifest.lock")
    ]
    assert leftovers == []
    assert store.missing_shards(root) == [0, 1]
    with pytest.raises(UsageError, match="samples"):
        store.ShardWriter(root, 0, 1, 5, "images", H, W, 10)
    with pytest.raises(UsageError, match="height"):
        store.ShardWriter(root, 0, 0, 5, "images", H + 1, W, 10)
    with pytest.raises(UsageError, match="out of range"):
        store.ShardWriter(root, 2, 10, 5, "images", H, W, 10)
    with store.ShardWriter(root, 0, 0, 5, "images", H, W, 10) as w:
        with pytest.raises(ValueError):
            w.write(0, images[0].astype(np.float32), raw[0], scene[0])
        w.write_batch(0, images[:5], raw[:5], scene[:5])
        with pytest.raises(ValueError, match="twice"):
            w.write(1, images[1], raw[1], scene[1])
    assert store.missing_shards(root) == [1]


def test_disk_full_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _data(5)
    store.create_dataset(root, "images", 5, 5, H, W, 10, {})

    def full(path: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.writer, "sha256_file", full)
    with (
        pytest.raises(DataError, match="disk full"),
        store.ShardWriter(root, 0, 0, 5, "images", H, W, 10) as w,
    ):
        w.write_batch(0, images, raw, scene)
    assert sorted(p.name for p in root.iterdir()) == [".manifest.lock", "manifest.json"]
    assert store.missing_shards(root) == [0]


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


def _read_in_child(ds: store.Dataset, i: int, q: mp.Queue) -> None:
    q.put(ds.read(i).images.sum())


def test_dataset_pickles_and_reopens_after_fork(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, _, _ = _make(root)
    ds = store.open_dataset(root)
    ds.read(0)  # open a handle in the parent
    clone = pickle.loads(pickle.dumps(ds))
    assert not clone._open
    np.testing.assert_array_equal(clone.read(11).images, images[11])
    q: mp.Queue = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_read_in_child, args=(ds, 13, q))
    p.start()
    p.join(30)
    assert p.exitcode == 0 and q.get(timeout=5) == images[13].sum()
    ds.close()


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


def test_shard_names_sort_past_99999() -> None:
    assert store.shard_digits(1) == 5 and store.shard_digits(100_000) == 5
    assert store.shard_digits(100_001) == 6
    d = store.shard_digits(250_000)
    names = [store.shard_file_name(k, d) for k in (0, 9, 99_999, 100_000, 249_999)]
    assert names == sorted(names) and names[3] == "shard-100000.h5"
    assert store.shard_file_name(42) == "shard-00042.h5"


# ----------------------------------------------------------------------------- verify / info


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_verify_good_and_flipped_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    _make(root, n=30, shard_size=10)
    code, out, _ = _cli(["verify", str(root)], capsys)
    assert code == 0 and "OK: 3 of 3 shards good" in out
    target = root / "shard-00001.h5"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the image data
    target.write_bytes(bytes(data))
    code, out, _ = _cli(["verify", str(root)], capsys)
    assert code == 1
    assert "BAD shard-00001.h5: SHA-256 checksum mismatch" in out
    assert "shard-00000.h5" not in out and "shard-00002.h5" not in out
    assert "FAILED: 2 of 3 shards good" in out
    # --quick skips checksums: a flipped pixel byte passes the structural checks
    code, out, _ = _cli(["verify", "--quick", str(root)], capsys)
    assert code == 0 and "--quick" in out


def test_verify_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    _make(root, n=40, shard_size=10)
    # a truncated shard, a missing shard file, a NaN latent (with a matching checksum)
    t = root / "shard-00000.h5"
    t.write_bytes(t.read_bytes()[:2000])
    (root / "shard-00001.h5").unlink()
    with h5py.File(root / "shard-00002.h5", "r+") as f:
        f["latents"][3, 4] = np.nan
    m = json.loads((root / "manifest.json").read_text())
    for e in m["shards"]:
        if e["index"] == 2:
            e["sha256"] = store.sha256_file(root / e["file"])
            e["bytes"] = (root / e["file"]).stat().st_size
    m["shards"] = [e for e in m["shards"] if e["index"] != 3]  # shard 3 never committed
    (root / "manifest.json").write_text(json.dumps(m))
    (root / ".shard-00003.h5.tmp-1-abcd").write_bytes(b"partial")
    report = store.verify_dataset(root)
    assert not report.ok
    assert report.bad_shards() == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    text = "\n".join(report.lines())
    assert "shard-00000.h5: size" in text and "does not open" in text
    assert "shard-00001.h5: file is missing" in text
    assert "latents holds NaN/inf in 1 samples (first 23)" in text
    assert report.missing == [3] and "INCOMPLETE: 1 of 4" in text
    assert "shard-00003.h5 is not in the manifest" in text and "temporary file" in text
    code, out, _ = _cli(["verify", "--quick", str(root)], capsys)
    assert code == 1 and "shard-00001.h5" in out
    code, _, err = _cli(["verify", str(tmp_path / "nothing")], capsys)
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1
    (root / "manifest.json").write_text("{not json")
    code, out, _ = _cli(["verify", str(root)], capsys)
    assert code == 1 and "BAD manifest" in out


def test_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    _make(root, n=25, shard_size=10, blender_version="5.0.1")
    code, out, _ = _cli(["info", str(root)], capsys)
    assert code == 0
    assert "images: 25 images (complete)" in out and "3 of 3 complete" in out
    assert f"{W} x {H} RGB" in out and "preset       test" in out and "seed         1" in out
    assert "blender 5.0.1" in out and "on disk" in out and "mean / std" in out
    code, _, err = _cli(["info", str(tmp_path)], capsys)
    assert code == 2 and "no manifest.json" in err


def test_read_slice_into_buffer(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    images, _, _ = _make(root, n=25, shard_size=10, compression="gzip")
    ds = store.open_dataset(root)
    buf = np.zeros((12, H, W, 3), np.uint8)
    got = ds.read_slice(8, 20, out=buf)
    assert got.images is buf
    np.testing.assert_array_equal(buf, images[8:20])
    with pytest.raises(ValueError, match="C-contiguous"):
        ds.read_slice(8, 19, out=buf)
    one = np.zeros((H, W, 3), np.uint8)
    ds.read_into(21, one)
    np.testing.assert_array_equal(one, images[21])
    root2 = tmp_path / "uncompressed"  # the direct-chunk path
    imgs2, _, _ = _make(root2, n=5, shard_size=5, compression="none")
    ds2 = store.open_dataset(root2)
    ds2.read_into(3, one)
    np.testing.assert_array_equal(one, imgs2[3])
    with pytest.raises(ValueError):
        ds2.read_into(3, np.zeros((H, W, 3), np.float32))


def test_lz4_readable_in_a_fresh_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = tmp_path / "ds"
    images, _, _ = _make(root, n=12, shard_size=5, compression="lz4")
    np.save(tmp_path / "expected.npy", images[7])
    code = (
        "import sys, numpy as np; from ident3d import store; "
        f"ds = store.open_dataset({str(root)!r}); "
        f"assert (ds.read(7).images == np.load({str(tmp_path / 'expected.npy')!r})).all(); "
        f"assert store.verify_dataset({str(root)!r}).ok"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


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


def test_info_names_preset_and_quality_records(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    cfg = {
        "preset": {"name": "3dident", "path": "/x/3dident.toml", "data": {"camera": {"lens": 35}}},
        "quality": {"name": "fast", "samples": 1, "denoise": True},
    }
    manifest = store.create_dataset(root, "images", 2, 2, H, W, 10, cfg)
    images, raw, scene = _data(2)
    with store.ShardWriter(root, 0, 0, 2, "images", H, W, 10) as w:
        w.write_batch(0, images, raw, scene)
    assert manifest["n"] == 2
    text = store.describe_dataset(root)
    assert "preset       3dident\n" in text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("quality ")]
    assert line.startswith("quality      fast (") and "samples=1" in line and "denoise=True" in line
