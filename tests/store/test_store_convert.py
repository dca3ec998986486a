"""Tests of ident3d.store.convert (and the original-layout readers it uses)."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from original_helpers import H, W, _read_png, make_original
from store_helpers import _cli, _uncommit

from ident3d import store
from ident3d.errors import DataError


def test_convert_export_roundtrip_pixel_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst, back = tmp_path / "orig", tmp_path / "store", tmp_path / "back"
    raw, scene, images = make_original(src, 23)
    code, out, _ = _cli(["convert", str(src), str(dst), "--shard-size", "10", "-j", "1"], capsys)
    assert code == 0 and "23 images in 3 shards" in out
    ds = store.open_dataset(dst)
    assert (len(ds), ds.height, ds.width, ds.kind) == (23, H, W, "images")
    np.testing.assert_array_equal(ds.read_slice(0, 23).images, images)
    np.testing.assert_array_equal(ds.raw_latents(), raw.astype(np.float32))
    np.testing.assert_array_equal(ds.scene_latents(), scene.astype(np.float32))
    assert ds.manifest["config"]["scene_latents"] == "latents.npy"
    assert ds.manifest["config"]["source"]["layout"] == "3dident"
    assert ds.manifest["factor_table"] and len(ds.manifest["factor_table"]) == 10
    assert store.verify_dataset(dst).ok
    code, _, _ = _cli(["export", str(dst), str(back), "-j", "1"], capsys)
    assert code == 0
    assert sorted(p.name for p in back.iterdir()) == ["images", "latents.npy", "raw_latents.npy"]
    assert sorted(p.name for p in (back / "images").iterdir()) == sorted(
        p.name for p in (src / "images").iterdir()
    )
    for i in range(23):
        name = f"{i:02d}.png"
        np.testing.assert_array_equal(_read_png(back / "images" / name), images[i])
    np.testing.assert_array_equal(np.load(back / "raw_latents.npy"), raw.astype(np.float32))
    np.testing.assert_array_equal(np.load(back / "latents.npy"), scene.astype(np.float32))
    # the export converts back to the same store content
    again = tmp_path / "again"
    store.convert_original(back, again, workers=1, shard_size=7, progress=False)
    np.testing.assert_array_equal(store.open_dataset(again).read_slice(0, 23).images, images)


def test_convert_parallel_lz4_and_computed_scene(tmp_path: Path) -> None:
    src, dst = tmp_path / "orig", tmp_path / "store"
    raw, _, images = make_original(src, 40, latents=False, digits=6)  # over-padded names
    store.convert_original(src, dst, workers=2, compression="lz4", shard_size=16, progress=False)
    ds = store.open_dataset(dst)
    assert ds.manifest["compression"] == "lz4"
    np.testing.assert_array_equal(ds.read_slice(0, 40).images, images)
    how = ds.manifest["config"]["scene_latents"]
    assert how["computed_from_raw"] is True and how["mapping"]["kind"] == "box"
    scene = ds.scene_latents()
    np.testing.assert_allclose(scene[:, :3], raw[:, :3] * 3.0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scene[:, 3:], raw[:, 3:] * np.pi / 2, rtol=1e-6, atol=1e-6)


def test_convert_maps_periodic_raw_latents_like_the_original(tmp_path: Path) -> None:
    # the original generator's own periodic-mode output without its latents.npy: 11 raw
    # columns, which convert maps with the periodic mode to the original's own scene latents
    import shutil

    from ident3d.fidelity import load_reference

    ref = load_reference("periodic")
    src, dst = tmp_path / "orig", tmp_path / "store"
    shutil.copytree(Path(__file__).resolve().parents[2] / "reference/orig-renders/periodic", src)
    (src / "latents.npy").unlink()
    store.convert_original(src, dst, workers=1, progress=False)
    ds = store.open_dataset(dst)
    how = ds.manifest["config"]["scene_latents"]
    assert how["computed_from_raw"] is True and how["mapping"]["kind"] == "periodic"
    np.testing.assert_allclose(ds.scene_latents(), ref.latents, atol=2e-5)
    np.testing.assert_array_equal(ds.read_slice(0, 8).images, ref.images)


def test_convert_refuses_existing_dst_and_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = tmp_path / "orig", tmp_path / "store"
    make_original(src, 6)
    assert _cli(["convert", str(src), str(dst), "-j", "1"], capsys)[0] == 0
    code, _, err = _cli(["convert", str(src), str(dst), "-j", "1"], capsys)
    assert code == 2 and "already holds a dataset" in err
    code, _, _ = _cli(
        ["convert", str(src), str(dst), "-j", "1", "--overwrite", "--shard-size", "4"], capsys
    )
    assert code == 0 and store.open_dataset(dst).num_shards == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    code, _, err = _cli(["convert", str(src), str(other), "-j", "1"], capsys)
    assert code == 2 and "not empty" in err and (other / "notes.txt").exists()
    # a failing --overwrite convert leaves no complete-looking dataset behind
    (src / "images" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    code, _, _ = _cli(["convert", str(src), str(dst), "-j", "1", "--overwrite"], capsys)
    assert code == 2 and not (dst / "manifest.json").exists() and not list(dst.glob("*.h5"))


def test_convert_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "orig", tmp_path / "store"
    make_original(src, 9)
    calls = {"n": 0}
    real = store.sha256_file

    def fill_up(path: object) -> str:
        calls["n"] += 1
        if calls["n"] == 2:  # the second shard hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path)

    monkeypatch.setattr(store.writer, "sha256_file", fill_up)
    with pytest.raises(DataError, match="disk full"):
        store.convert_original(src, dst, workers=1, shard_size=4, progress=False)
    assert not dst.exists()


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _shard_digests(root: Path) -> dict[str, str]:
    return {e["file"]: e["sha256"] for e in store.read_manifest(root)["shards"]}


def test_convert_resume_continues_and_keeps_live_temp_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, ref, dst = tmp_path / "orig", tmp_path / "ref", tmp_path / "store"
    make_original(src, 10)
    args = ["-j", "1", "--shard-size", "3"]
    assert _cli(["convert", str(src), str(ref), *args], capsys)[0] == 0
    assert _cli(["convert", str(src), str(dst), *args], capsys)[0] == 0
    # the state a killed run leaves: shards 2 and 3 not committed, a dead writer's temp shard
    _uncommit(dst, range(2, 4))
    (dst / "shard-00003.h5").unlink()  # shard 2's file stays: renamed but never committed
    dead = dst / f".shard-00003.h5.tmp-{_dead_pid()}-0a1b2c3d"
    dead.write_bytes(b"half a shard")
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = dst / f".shard-00009.h5.tmp-{live_proc.pid}-0a1b2c3d"
        live.write_bytes(b"a live writer's shard")
        code, _, err = _cli(["convert", str(src), str(dst), *args], capsys)
        assert code == 2 and "--resume" in err and "--overwrite" in err
        code, _, err = _cli(
            ["convert", str(src), str(dst), *args, "--resume", "--overwrite"], capsys
        )
        assert code == 2 and "exclude each other" in err
        code, _, err = _cli(["convert", str(src), str(dst), *args, "--resume"], capsys)
        assert code == 0, err
        assert _shard_digests(dst) == _shard_digests(ref)
        assert store.verify_dataset(dst).ok
        assert not dead.exists() and live.exists()
        # resuming a complete conversion changes nothing
        before = (dst / "manifest.json").read_bytes()
        assert _cli(["convert", str(src), str(dst), *args, "--resume"], capsys)[0] == 0
        assert (dst / "manifest.json").read_bytes() == before
        # a different plan is refused on resume (not silently replaced)
        code, _, err = _cli(["convert", str(src), str(dst), "-j", "1", "--resume"], capsys)
        assert code == 2 and "different" in err and _shard_digests(dst) == _shard_digests(ref)
        # --overwrite removes everything of the old conversion but the live writer's file
        dead.write_bytes(b"half a shard")
        code, _, _ = _cli(["convert", str(src), str(dst), "-j", "1", "--overwrite"], capsys)
        assert code == 0 and not dead.exists() and live.exists()
        assert sorted(p.name for p in dst.iterdir() if p.name != live.name) == [
            ".manifest.lock", ".records", "manifest.json", "shard-00000.h5"]  # fmt: skip
    finally:
        live_proc.kill()
        live_proc.wait()


def test_convert_overwrite_same_plan_starts_from_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = tmp_path / "orig", tmp_path / "store"
    make_original(src, 6)
    assert _cli(["convert", str(src), str(dst), "-j", "1", "--shard-size", "4"], capsys)[0] == 0
    stale = dst / f".shard-00001.h5.tmp-{_dead_pid()}-deadbeef"
    stale.write_bytes(b"x")
    created = store.read_manifest(dst)["shards"][0]["written"]
    (dst / "shard-00000.h5").write_bytes(b"damaged")
    args = ["convert", str(src), str(dst), "-j", "1", "--shard-size", "4", "--overwrite"]
    assert _cli(args, capsys)[0] == 0
    assert not stale.exists() and store.verify_dataset(dst).ok
    assert store.read_manifest(dst)["shards"][0]["written"] >= created


def test_convert_killed_while_creating_its_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed before the manifest existed: DST holds only a dead writer's temporary file."""
    src, dst = tmp_path / "orig", tmp_path / "store"
    make_original(src, 5)
    dst.mkdir()
    stale = dst / f".manifest.json.tmp-{_dead_pid()}-00aa11bb"
    stale.write_text("{")
    code, _, err = _cli(["convert", str(src), str(dst), "-j", "1"], capsys)
    assert code == 2 and "only temporary files" in err and "--resume" in err
    assert _cli(["convert", str(src), str(dst), "-j", "1", "--resume"], capsys)[0] == 0
    assert not stale.exists() and store.verify_dataset(dst).ok
