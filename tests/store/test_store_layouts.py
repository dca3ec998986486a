"""Tests of ident3d.store.layouts: the 3DIdent and Causal3DIdent layouts read by convert, and bad
input folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from original_helpers import H, W, _image, _read_png, make_original
from PIL import Image
from store_helpers import _cli

from ident3d import store
from ident3d.errors import DataError


def make_causal(split_dir: Path, counts: dict[int, int], seed: int = 0):
    rng = np.random.default_rng(seed)
    split_dir.mkdir(parents=True)
    out = {}
    for c, n in counts.items():
        raw = rng.uniform(-1, 1, (n, 10))
        np.save(split_dir / f"raw_latents_{c}.npy", raw)
        (split_dir / f"images_{c}").mkdir()
        images = np.stack([_image(rng) for _ in range(n)])
        for i, img in enumerate(images):
            Image.fromarray(img).save(split_dir / f"images_{c}" / f"{i}.png")  # no padding
        out[c] = (raw, images)
    return out


def test_causal3dident_roundtrip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "causal"
    train = make_causal(root / "trainset", {0: 5, 2: 12, 6: 3})
    make_causal(root / "testset", {0: 2}, seed=1)
    dst = tmp_path / "store"
    code, _, err = _cli(["convert", str(root), str(dst), "-j", "1"], capsys)
    assert code == 2 and "--split" in err and not dst.exists()
    code, _, _ = _cli(["convert", str(root), str(dst), "-j", "1", "--split", "train"], capsys)
    assert code == 0
    ds = store.open_dataset(dst)
    assert len(ds) == 20 and ds.class_names == list(store.CAUSAL3DIDENT_CLASSES)
    np.testing.assert_array_equal(ds.classes(), [0] * 5 + [2] * 12 + [6] * 3)
    np.testing.assert_array_equal(ds.read(5).images, train[2][1][0])
    assert ds.read(19).cls == 6 and ds.class_names[6] == "Head"
    # the split folder itself works too
    store.convert_original(root / "testset", tmp_path / "test", workers=1, progress=False)
    assert len(store.open_dataset(tmp_path / "test")) == 2
    back = tmp_path / "back"
    store.export_original(dst, back, workers=1, progress=False)
    assert sorted(p.name for p in back.iterdir()) == [
        "class_names.json", "images_0", "images_2", "images_6", "latents_0.npy", "latents_2.npy", "latents_6.npy",
        "raw_latents_0.npy", "raw_latents_2.npy", "raw_latents_6.npy",
    ]  # fmt: skip
    assert sorted(p.name for p in (back / "images_2").iterdir())[:2] == ["00.png", "01.png"]
    for c, (raw, images) in train.items():
        np.testing.assert_array_equal(
            np.load(back / f"raw_latents_{c}.npy"), raw.astype(np.float32)
        )
        d = store.index_digits(len(images))
        for i, img in enumerate(images):
            np.testing.assert_array_equal(_read_png(back / f"images_{c}" / f"{i:0{d}d}.png"), img)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "not a readable PNG"),
        ("not_png", "not a PNG"),
        ("missing_image", "holds 7 PNG images but raw_latents.npy has 8"),
        ("latents_rows", "latents.npy has shape (7, 10)"),
        ("no_raw", "neither a 3DIdent folder"),
        ("bad_npy", "not a readable .npy"),
        ("grey", "is a L PNG"),
        ("size", "pixels; the others are"),
        ("16bit", "16 bits per channel"),
    ],
)
def test_convert_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    src, dst = tmp_path / "orig", tmp_path / "store"
    make_original(src, 8)
    img = src / "images" / "5.png"
    if damage == "truncate":
        img.write_bytes(img.read_bytes()[:60])
    elif damage == "not_png":
        Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(img, format="BMP")
    elif damage == "missing_image":
        img.unlink()
    elif damage == "latents_rows":
        np.save(src / "latents.npy", np.zeros((7, 10)))
    elif damage == "no_raw":
        (src / "raw_latents.npy").unlink()
    elif damage == "bad_npy":
        (src / "raw_latents.npy").write_bytes(b"garbage")
    elif damage == "grey":
        Image.fromarray(np.zeros((H, W), np.uint8)).save(img)
    elif damage == "size":
        Image.fromarray(np.zeros((H + 1, W, 3), np.uint8)).save(img)
    elif damage == "16bit":
        Image.fromarray(np.full((H, W), 300, np.uint16)).save(img)
    code, _, err = _cli(["convert", str(src), str(dst), "-j", "1", "--shard-size", "3"], capsys)
    assert code == 2, err
    assert err.startswith("error:") and err.count("\n") == 1 and message in err, err
    assert not dst.exists()  # nothing left behind


def test_read_class_names_sidecar_and_fallback(tmp_path: Path) -> None:
    assert store.read_class_names(tmp_path) == list(store.CAUSAL3DIDENT_CLASSES)
    (tmp_path / "class_names.json").write_text('{"class_names": ["a", "b"]}')
    assert store.read_class_names(tmp_path) == ["a", "b"]
    (tmp_path / "class_names.json").write_text("[1")
    with pytest.raises(store.DataError, match="class_names.json is not readable JSON"):
        store.read_class_names(tmp_path)


def test_3didentbox_layout_is_scanned_and_checked(tmp_path: Path) -> None:
    from ident3d.store.layouts import scan_original_layout

    src = tmp_path / "box"
    for v in ("m1", "m2"):
        (src / "samples" / v).mkdir(parents=True)
        (src / "factors" / v).mkdir(parents=True)
        np.save(src / "factors" / v / "raw_latents.npy", np.zeros((2, 10)))
        for i in range(2):
            (src / "samples" / v / f"{i}.png").write_bytes(b"")
    layout, _base, parts = scan_original_layout(src, None)
    assert layout == "3didentbox" and [p.images_dir.name for p in parts] == ["m1", "m2"]
    np.save(src / "factors" / "m2" / "raw_latents.npy", np.zeros((3, 10)))
    with pytest.raises(DataError, match="holds 2 PNG images but factors/m2/raw_latents.npy"):
        scan_original_layout(src, None)
    np.save(src / "factors" / "m2" / "raw_latents.npy", np.zeros((2, 10)))
    np.save(src / "factors" / "m1" / "latents.npy", np.zeros((2, 10)))
    with pytest.raises(DataError, match="in one view folder only"):
        scan_original_layout(src, None)
