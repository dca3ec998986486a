"""Tests of ident3d.store.export: the original layout written back."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest
from original_helpers import H, W, _read_png, make_original
from PIL import Image
from store_helpers import _cli, _uncommit

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
    _uncommit(dst, range(store.read_manifest(dst)["num_shards"]))
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


def test_class_names_survive_export_and_convert(tmp_path: Path) -> None:
    from store_helpers import _make

    root, out, back = tmp_path / "ds", tmp_path / "exp", tmp_path / "back"
    names = ["teapot", "suzanne", "torus", "pyr"]
    cls = np.arange(20) % 4
    images, _, _ = _make(root, n=20, shard_size=8, has_class=True, class_names=names, cls=cls)
    store.export_original(root, out, workers=1, progress=False)
    doc = json.loads((out / "class_names.json").read_text())
    assert doc["class_names"] == names
    store.convert_original(out, back, workers=1, progress=False)
    ds = store.open_dataset(back)
    assert ds.class_names == names
    # classes are concatenated in class order: the first 5 samples are class 0 (teapot)
    assert ds.read(0).cls == 0 and ds.class_names[ds.read(19).cls] == "pyr"
    np.testing.assert_array_equal(ds.read(0).images, images[0])
    # without the sidecar, Causal3DIdent's names are the fallback
    (out / "class_names.json").unlink()
    store.convert_original(out, tmp_path / "fallback", workers=1, progress=False)
    assert store.open_dataset(tmp_path / "fallback").class_names == list(
        store.CAUSAL3DIDENT_CLASSES
    )
    # a sidecar that names too few classes, or is not a list of names, is refused
    (out / "class_names.json").write_text(json.dumps({"class_names": ["a", "b"]}))
    with pytest.raises(DataError, match="has class 2; its classes are 0..1"):
        store.convert_original(out, tmp_path / "x", workers=1, progress=False)
    (out / "class_names.json").write_text(json.dumps({"class_names": "abc"}))
    with pytest.raises(DataError, match="class_names.json must hold"):
        store.convert_original(out, tmp_path / "y", workers=1, progress=False)


def test_export_removes_stale_partial_folders_of_dead_exporters(tmp_path: Path) -> None:
    import subprocess
    import sys

    from store_helpers import _make

    root, out = tmp_path / "ds", tmp_path / "exp"
    _make(root, n=6, shard_size=6)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".exp.partial-{gone.pid}-0123abcd"
        (stale / "images").mkdir(parents=True)
        (stale / "images" / "0.png").write_bytes(b"half")
        busy = tmp_path / f".exp.partial-{live.pid}-0123abcd"
        busy.mkdir()
        other = tmp_path / f".other.partial-{gone.pid}-0123abcd"  # another DST's: not ours
        other.mkdir()
        store.export_original(root, out, workers=1, progress=False)
        assert not stale.exists() and busy.exists() and other.exists()
        assert sorted(p.name for p in out.iterdir()) == ["images", "latents.npy", "raw_latents.npy"]
    finally:
        live.kill()
        live.wait()


def _box_pairs(root: Path, n: int = 12, preset: str = "3didentbox") -> tuple:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, 2, H, W, 3), dtype=np.uint8)
    raw = rng.uniform(-1, 1, (n, 2, 10)).astype(np.float32)
    scene = rng.normal(size=(n, 2, 10)).astype(np.float32)
    m = store.create_dataset(root, "pairs", n, 5, H, W, 10, {"preset": {"name": preset}})
    for k in range(m["num_shards"]):
        a, c = store.shard_range(m, k)
        with store.ShardWriter(root, k, a, c, "pairs", H, W, 10) as w:
            w.write_batch(0, images[a : a + c], raw[a : a + c], scene[a : a + c])
    return images, raw, scene


def test_3didentbox_layout_export_and_convert_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """3DIdentBox: samples/m1|m2/<i>.png, factors/m1|m2/{raw_latents,latents}.npy (auto for a
    3didentbox render); convert reads it back as pairs, bit for bit."""
    root = tmp_path / "pairs"
    images, raw, scene = _box_pairs(root)
    out = tmp_path / "hues_positions_rotations"
    code, _, err = _cli(["export", str(root), str(out), "--workers", "1", "--no-progress"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["factors", "samples"]
    for v, name in enumerate(("m1", "m2")):
        np.testing.assert_array_equal(
            np.load(out / "factors" / name / "raw_latents.npy"), raw[:, v]
        )
        np.testing.assert_array_equal(np.load(out / "factors" / name / "latents.npy"), scene[:, v])
        assert sorted(p.name for p in (out / "samples" / name).iterdir())[:2] == [
            "00.png",
            "01.png",
        ]
        np.testing.assert_array_equal(_read_png(out / "samples" / name / "07.png"), images[7, v])
    back = tmp_path / "back"
    code, _, err = _cli(["convert", str(out), str(back), "--workers", "2", "--no-progress"], capsys)
    assert code == 0, err
    ds = store.open_dataset(back)
    assert ds.kind == "pairs" and len(ds) == 12
    s = ds.read_slice(0, 12)
    np.testing.assert_array_equal(s.images, images)
    np.testing.assert_array_equal(s.raw, raw)
    np.testing.assert_array_equal(s.scene, scene)
    assert ds.manifest["config"]["source"]["layout"] == "3didentbox"
    # the 3dident layout on request; images refuse the 3DIdentBox layout
    other = tmp_path / "plain"
    store.export_original(root, other, workers=1, progress=False, layout="3dident")
    assert (other / "view0").is_dir()
    singles = tmp_path / "singles"
    from store_helpers import _make

    _make(singles, n=4)
    code, _, err = _cli(["export", str(singles), str(tmp_path / "x"), "--layout",
                         "3didentbox"], capsys)  # fmt: skip
    assert code == 2 and "is for pairs" in err and err.count("\n") == 1
