"""Tests of ident3d.store.verify (ident3d verify)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from store_helpers import H, W, _cli, _make, _uncommit

from ident3d import store


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
    (root / "manifest.json").write_text(json.dumps(m))
    _uncommit(root, [3])  # shard 3 never committed
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


def _rewrite_manifest_entry(root: Path, index: int) -> None:
    """Make the manifest agree with the current file of shard ``index`` (size and SHA-256),
    so that only the structural checks can see what changed."""
    m = json.loads((root / "manifest.json").read_text())
    for e in m["shards"]:
        if e["index"] == index:
            e["sha256"] = store.sha256_file(root / e["file"])
            e["bytes"] = (root / e["file"]).stat().st_size
    (root / "manifest.json").write_text(json.dumps(m))


def test_quick_sees_size_signature_and_chunk_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ds"
    images, raw, scene = _make(root, n=30, shard_size=10)
    # shard 0: a flipped byte in the HDF5 signature (the size is right)
    p0 = root / "shard-00000.h5"
    data = bytearray(p0.read_bytes())
    data[1] ^= 0xFF
    p0.write_bytes(bytes(data))
    # shard 1: cut short by 100 bytes (size differs from the manifest)
    p1 = root / "shard-00001.h5"
    p1.write_bytes(p1.read_bytes()[:-100])
    # shard 2: rewritten with one sample's chunk never stored, manifest updated to match it
    p2 = root / "shard-00002.h5"
    p2.unlink()
    with h5py.File(p2, "w") as f:
        d = f.create_dataset("images", (10, H, W, 3), np.uint8, chunks=(1, H, W, 3))
        for j in range(9):
            d[j] = images[20 + j]
        f["latents_raw"], f["latents"] = raw[20:], scene[20:]
        f.attrs.update({"shard_index": 2, "start": 20, "count": 10})
    _rewrite_manifest_entry(root, 2)
    report = store.verify_dataset(root, quick=True)
    text = "\n".join(report.lines())
    assert report.bad_shards() == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"], text
    assert "shard-00000.h5: does not start with the HDF5 signature" in text
    assert "shard-00001.h5: size" in text and "truncated or changed" in text
    assert "shard-00002.h5: images have 9 stored chunks, expected 10" in text
    code, out, _ = _cli(["verify", "--quick", str(root)], capsys)
    assert code == 1 and "FAILED: 0 of 3 shards good (structure only" in out


def test_quick_does_not_see_changed_pixels_full_verify_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What docs/store.md says: only the checksum pass sees a changed pixel byte."""
    root = tmp_path / "ds"
    images, _, _ = _make(root, n=10, shard_size=10)
    path = root / "shard-00000.h5"
    with h5py.File(path, "r") as f:
        offset = f["images"].id.get_chunk_info(4).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 7] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not np.array_equal(store.open_dataset(root).read(4).images, images[4])
    code, out, _ = _cli(["verify", "--quick", str(root)], capsys)
    assert code == 0 and "no checksums" in out
    code, out, _ = _cli(["verify", str(root)], capsys)
    assert code == 1 and "SHA-256 checksum mismatch" in out


def test_verify_reports_object_dtypes_without_reading_them(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make(root, n=10, shard_size=10)
    with h5py.File(root / "shard-00000.h5", "a") as f:
        del f["latents"]
        f.create_dataset("latents", data=np.array([b"x"] * 100, dtype=object).reshape(10, 10),
                         dtype=h5py.string_dtype())  # fmt: skip
    _rewrite_manifest_entry(root, 0)
    text = "\n".join(store.verify_dataset(root).lines())
    assert "BAD shard-00000.h5: latents has dtype object, expected float32" in text
    assert "NaN" not in text
