"""Tests of ident3d.store.export: the original layout written back."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from original_helpers import H, W, _read_png, make_original
from PIL import Image
from store_helpers import _cli

from ident3d import store
from ident3d.errors import DataError


def test_index_digits() -> None:
    cases = {1: 1, 2: 1, 10: 1, 11: 2, 100: 2, 101: 3, 1000: 3, 1001: 4, 25_000: 5, 250_000: 6}
    assert {n: store.index_digits(n) for n in cases} == cases


def test_export_pairs_two_views(tmp_path: Path) -> None:
    root = tmp_path / "pairs"
    rng = np.random.default_rng(0)
    n = 12
    images = rng.integers(0, 256, (n, 2, H, W, 3), dtype=np.uint8)
    raw = rng.uniform(-1, 1, (n, 2, 10)).astype(np.float32)
    scene = rng.normal(size=(n, 2, 10)).astype(np.float32)
    m = store.create_dataset(root, "pairs", n, 5, H, W, 10, {})
    for k in range(m["num_shards"]):
        a, c = store.shard_range(m, k)
        with store.ShardWriter(root, k, a, c, "pairs", H, W, 10) as w:
            w.write_batch(0, images[a : a + c], raw[a : a + c], scene[a : a + c])
    out = tmp_path / "out"
    store.export_original(root, out, workers=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["pairs.json", "view0", "view1"]
    assert json.loads((out / "pairs.json").read_text())["n"] == n
    for v in (0, 1):
        np.testing.assert_array_equal(np.load(out / f"view{v}" / "raw_latents.npy"), raw[:, v])
        for i in range(n):
            got = _read_png(out / f"view{v}" / "images" / f"{i:02d}.png")
            np.testing.assert_array_equal(got, images[i, v])


def test_export_refuses_and_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, dst = tmp_path / "orig", tmp_path / "store"
    make_original(src, 5)
    store.convert_original(src, dst, workers=1, progress=False)
    out = tmp_path / "out"
    assert _cli(["export", str(dst), str(out), "-j", "1"], capsys)[0] == 0
    code, _, err = _cli(["export", str(dst), str(out), "-j", "1"], capsys)
    assert code == 2 and "--overwrite" in err
    assert _cli(["export", str(dst), str(out), "-j", "1", "--overwrite"], capsys)[0] == 0
    (out / "mine.txt").write_text("x")
    code, _, err = _cli(["export", str(dst), str(out), "-j", "1", "--overwrite"], capsys)
    assert code == 2 and "mine.txt" in err and (out / "raw_latents.npy").exists()
    m = json.loads((dst / "manifest.json").read_text())
    m["shards"] = []
    (dst / "manifest.json").write_text(json.dumps(m))
    code, _, err = _cli(["export", str(dst), str(tmp_path / "o2"), "-j", "1"], capsys)
    assert code == 2 and "incomplete" in err and not (tmp_path / "o2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial folders


def test_export_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "orig", tmp_path / "store"
    make_original(src, 5)
    store.convert_original(src, dst, workers=1, progress=False)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(DataError, match="disk full"):
        store.export_original(dst, tmp_path / "out", workers=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orig", "store"]


@pytest.mark.parametrize("n, names", [(1, ["0.png"]), (10, [f"{i}.png" for i in range(10)])])
def test_export_padding_edge_cases(tmp_path: Path, n: int, names: list[str]) -> None:
    src, dst, back = tmp_path / "orig", tmp_path / "store", tmp_path / "back"
    _, _, images = make_original(src, n)
    store.convert_original(src, dst, workers=1, progress=False)
    store.export_original(dst, back, workers=1, progress=False)
    assert sorted(p.name for p in (back / "images").iterdir()) == sorted(names)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(_read_png(back / "images" / name), images[i])
