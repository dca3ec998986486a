"""Tests of ident3d.store.describe (ident3d info)."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_helpers import H, W, _cli, _data, _make

from ident3d import store


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


@pytest.mark.parametrize("damage", ["delete", "truncate", "not-hdf5", "directory"])
def test_info_says_when_listed_shards_are_missing_or_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    root = tmp_path / "ds"
    _make(root, n=30, shard_size=10)
    code, out, _ = _cli(["info", str(root)], capsys)
    assert code == 0 and "(complete)" in out and "BAD" not in out
    path = root / "shard-00001.h5"
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "not-hdf5":
        size = path.stat().st_size
        path.write_bytes(b"x" * size)
    else:
        path.unlink()
        path.mkdir()
    code, out, _ = _cli(["info", str(root)], capsys)
    assert code == 1, out
    assert "(complete)" not in out and "DAMAGED: 1 of 3 listed shards" in out
    assert "BAD shard-00001.h5: " in out and "shard-00000.h5" not in out
    assert out.rstrip().splitlines()[-1].startswith("FAILED: 1 listed shard files")
    assert store.check_shard_files(root)[0][0] == "shard-00001.h5"
