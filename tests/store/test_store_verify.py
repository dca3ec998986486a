"""Tests of ident3d.store.verify (ident3d verify)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from store_helpers import _cli, _make

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
