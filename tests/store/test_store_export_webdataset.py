"""Tests of ident3d.store.export_webdataset (ident3d export --format webdataset): the
``webdataset`` library streams the tar shards back exactly, pairs as two images of one sample."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from store_helpers import _cli, _make

from ident3d import store

wds = pytest.importorskip("webdataset")


def _urls(dst):
    return sorted(str(p) for p in dst.glob("shard-*.tar"))


def test_images_with_classes_stream_back_exactly(tmp_path, capsys):
    root = tmp_path / "ds"
    names = ["a", "b"]
    cls = np.array([i % 2 for i in range(13)])
    images, raw, scene = _make(root, n=13, shard_size=6, has_class=True, class_names=names, cls=cls)
    dst = tmp_path / "wds"
    code, _, err = _cli(["export", str(root), str(dst), "--format", "webdataset",
                           "--shard-size", "5", "-j", "2"], capsys)  # fmt: skip
    assert code == 0, err
    assert _urls(dst) == [str(dst / f"shard-0000{k}.tar") for k in range(3)]
    seen = 0
    for i, s in enumerate(wds.WebDataset(_urls(dst), shardshuffle=False).decode("rgb8")):
        assert s["__key__"] == f"{i:08d}"
        assert np.array_equal(s["png"], images[i])
        assert s["raw_latents.npy"].dtype == np.float32
        assert np.array_equal(s["raw_latents.npy"], raw[i])
        assert np.array_equal(s["latents.npy"], scene[i])
        meta = s["json"]
        assert (
            meta["index"] == i and meta["class"] == cls[i] and meta["class_name"] == names[cls[i]]
        )
        assert np.array_equal(np.asarray(meta["raw_latents"], np.float32), raw[i])
        assert int(s["cls"]) == cls[i]
        seen += 1
    assert seen == 13
    assert "shard-{00000..00002}.tar" in (dst / "README.md").read_text()


def test_pairs_are_two_images_of_one_sample(tmp_path):
    root = tmp_path / "pairs"
    images, raw, scene = _make(root, n=7, shard_size=3, kind="pairs")
    dst = store.export_webdataset(root, tmp_path / "wds", workers=1, progress=False)
    ds = wds.WebDataset(_urls(dst), shardshuffle=False).decode("rgb8")
    rows = list(ds.to_tuple("view0.png", "view1.png", "raw_latents.npy", "latents.npy"))
    assert len(rows) == 7
    for i, (v0, v1, r, sc) in enumerate(rows):
        assert np.array_equal(v0, images[i, 0]) and np.array_equal(v1, images[i, 1])
        assert np.array_equal(r, raw[i]) and r.shape == (2, 10)
        assert np.array_equal(sc, scene[i])


def test_export_is_reproducible_and_atomic(tmp_path, capsys):
    root = tmp_path / "ds"
    _make(root, n=6, shard_size=6)
    a = store.export_webdataset(root, tmp_path / "a", workers=1, progress=False)
    b = store.export_webdataset(root, tmp_path / "b", workers=1, progress=False)

    def digest(d):
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())]

    assert digest(a) == digest(b)
    code, _, err = _cli(["export", str(root), str(a), "--format", "webdataset"], capsys)
    assert code == 2 and "pass --overwrite" in err
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("fmt", ["hf", "webdataset"])
def test_a_failing_export_leaves_nothing(tmp_path, monkeypatch, fmt):
    """An error while writing the second output file: no DST, no partial folder, and an
    earlier export in DST (with overwrite) stays as it was."""
    pytest.importorskip("pyarrow")
    import importlib

    hf_mod = importlib.import_module("ident3d.store.export_hf")
    wds_mod = importlib.import_module("ident3d.store.export_webdataset")

    root = tmp_path / "ds"
    _make(root, n=8, shard_size=4)
    mod, fn = (hf_mod, store.export_hf) if fmt == "hf" else (wds_mod, store.export_webdataset)
    real, calls = mod._png, []

    def flaky(img, level):
        calls.append(1)
        if len(calls) == 6:
            raise OSError("simulated write failure")
        return real(img, level)

    monkeypatch.setattr(mod, "_png", flaky)
    with pytest.raises(OSError, match="simulated"):
        fn(root, tmp_path / "out", shard_size=4, workers=1, progress=False)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    monkeypatch.setattr(mod, "_png", real)
    fn(root, tmp_path / "out", shard_size=4, workers=1, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    calls.clear()
    monkeypatch.setattr(mod, "_png", flaky)
    with pytest.raises(OSError, match="simulated"):
        fn(root, tmp_path / "out", shard_size=4, workers=1, progress=False, overwrite=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert after == before
