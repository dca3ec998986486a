"""ident3d.store.layouts.multimodal3dident: export read by the original loader; convert back.

The original loader is ``Multimodal3DIdent`` of multimodal-contrastive-learning's
``datasets.py`` (github.com/imantdaunhawer/multimodal-contrastive-learning); it is not part of
ident3d. Point ``IDENT3D_MCL_DATASETS`` at that file to run the test; it skips without it.
NLTK's ``sent_tokenize``/``word_tokenize`` need Punkt data (a download, a pickle), so the test
hands the loader ident3d's data-free stand-ins in their place.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from ident3d import store
from ident3d.cli import main
from ident3d.latents.multimodal import IMAGE_COLUMNS, TEXT_INT_COLUMNS
from ident3d.render.multimodal import MultimodalJob, render_multimodal
from ident3d.scenes import load_preset
from ident3d.store.layouts.multimodal3dident import convert_multimodal, export_multimodal
from ident3d.store.multimodal import read_text
from ident3d.text.tokenizer import sentences, word_tokenize


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mm") / "d"
    job = MultimodalJob(load_preset("multimodal3dident"), "fast", 32, 12, 9, renderer="mock",
                        shard_size=5)  # fmt: skip
    render_multimodal(job, root, workers=0, progress=False)
    return root


def _original_loader(monkeypatch: pytest.MonkeyPatch) -> type:
    path = os.environ.get("IDENT3D_MCL_DATASETS")
    if not path or not Path(path).is_file():
        pytest.skip("set IDENT3D_MCL_DATASETS to multimodal-contrastive-learning's datasets.py")
    pytest.importorskip("pandas")
    pytest.importorskip("torchvision")
    fake = types.ModuleType("nltk.tokenize")
    fake.sent_tokenize = sentences  # type: ignore[attr-defined]
    fake.word_tokenize = word_tokenize  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nltk", types.ModuleType("nltk"))
    monkeypatch.setitem(sys.modules, "nltk.tokenize", fake)
    spec = importlib.util.spec_from_file_location("mcl_datasets", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Multimodal3DIdent


def test_export_read_by_the_original_loader(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = _original_loader(monkeypatch)
    export_multimodal(dataset, tmp_path / "m3di", split="train")
    orig = loader(str(tmp_path / "m3di"), mode="train")
    ds = store.open_dataset(dataset)
    text = read_text(dataset)
    raw = ds.raw_latents()
    assert len(orig) == len(ds) == 12
    assert orig.text_in_sentences == text.captions
    w2i = orig.w2i
    for i in range(len(ds)):
        item = orig[i]
        np.testing.assert_array_equal(np.asarray(item["image"]), ds.read(i).images)  # pixel-exact
        ids = item["text"].argmax(-1).tolist()
        i2w = {v: k for k, v in w2i.items()}
        words = [i2w[k] for k in ids]
        toks = word_tokenize(text.captions[i])
        assert words == [*toks, "{eos}"] + ["{pad}"] * (orig.max_sequence_length - len(toks) - 1)
        assert all(w in w2i for w in toks)
        for c, name in enumerate(IMAGE_COLUMNS):
            # pandas' default float parser may be 1 float64 ulp off the written decimal; the
            # decimal itself is the stored float32 exactly (test_export_convert_round_trip)
            assert np.float32(item["z_image"][name]) == raw[i, c], name
        for c, name in enumerate(TEXT_INT_COLUMNS[:-1]):
            assert int(item["z_text"][name]) == int(text.latents[i, c]), name
        assert item["z_text"]["object_color_name"] == text.color_names[i]


def test_export_convert_round_trip_and_cli(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = export_multimodal(dataset, tmp_path / "m3di", split="val")
    assert sorted(p.name for p in out.iterdir()) == [
        "images", "latents_image.csv", "latents_text.csv", "text"]  # fmt: skip
    assert sorted(p.name for p in (out / "images").iterdir())[:2] == ["00.png", "01.png"]
    assert (out / "latents_text.csv").read_text().splitlines()[0] == (
        "object_shape,object_xpos,object_ypos,object_zpos,object_color_name,"
        "object_color_index,text_phrasing"
    )
    back = convert_multimodal(out, tmp_path / "back", shard_size=7)
    a, b = store.open_dataset(dataset), store.open_dataset(back)
    np.testing.assert_array_equal(a.read_slice(0, 12).images, b.read_slice(0, 12).images)
    np.testing.assert_array_equal(a.raw_latents(), b.raw_latents())
    np.testing.assert_allclose(a.scene_latents(), b.scene_latents(), atol=1e-6)
    ta, tb = read_text(dataset), read_text(back)
    assert ta.captions == tb.captions and ta.color_names == tb.color_names
    np.testing.assert_array_equal(ta.latents, tb.latents)  # the palette too, from the name

    def run(argv: list[str]) -> int:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        return int(exc.value.code or 0)

    assert run(["export", str(dataset), str(tmp_path / "m3di"), "--split", "val"]) == 2
    assert "exists" in capsys.readouterr().err
    assert run(["convert", str(tmp_path / "m3di"), str(tmp_path / "c")]) == 2
    assert "--split" in capsys.readouterr().err
    assert run(["convert", str(tmp_path / "m3di"), str(tmp_path / "c"), "--split", "val"]) == 0
    (out / "text" / "text_raw.txt").write_text("one line only")
    assert run(["convert", str(out), str(tmp_path / "c2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "index-aligned" in err[0]
    assert not (tmp_path / "c2").exists()
