"""ident3d.data.multimodal_dataset: image, token ids, image latents, text latents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ident3d import store
from ident3d.data.buffers import collate
from ident3d.data.multimodal_dataset import MultimodalDataset
from ident3d.errors import UsageError
from ident3d.render.multimodal import MultimodalJob, render_multimodal
from ident3d.scenes import load_preset
from ident3d.store.multimodal import read_text
from ident3d.text.tokenizer import word_tokenize
from ident3d.text.vocabulary import Vocabulary


@pytest.fixture(scope="module")
def mm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mmds") / "d"
    job = MultimodalJob(load_preset("multimodal3dident"), "fast", 32, 10, 2, renderer="mock")
    render_multimodal(job, root, workers=0, progress=False)
    return root


def test_items_and_vocabulary(mm: Path) -> None:
    ds = MultimodalDataset(mm)
    assert (mm / "vocab.json").is_file()  # built from the captions, saved beside the data
    assert len(ds) == 10
    x, ids, z_img, z_txt = ds[3]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), store.open_dataset(mm).read(3).images)
    caption = read_text(mm).captions[3]
    words = [ds.vocabulary.words[k] for k in ids.tolist()]
    toks = word_tokenize(caption)
    assert words[: len(toks) + 1] == [*toks, "{eos}"] and set(words[len(toks) + 1 :]) <= {"{pad}"}
    assert ids.shape == (ds.max_sequence_length,)
    assert z_img.shape == (11,) and z_txt.shape == (7,) and z_txt.dtype == torch.int64
    assert int(z_img[0]) == int(z_txt[0])  # shared shape
    batch = collate(ds.__getitems__([0, 3, 5]))
    assert batch[0].shape == (3, 3, 32, 32) and torch.equal(batch[1][1], ids)
    # a second open reads the saved vocabulary; another split takes the training one
    again = MultimodalDataset(mm)
    assert again.vocabulary == ds.vocabulary
    small = Vocabulary.build([["A", "."]])
    other = MultimodalDataset(mm, vocabulary=small, save_vocabulary=False)
    assert other.vocab_size == 5 and other.text_ids.shape == (10, 3)  # cut to its max_len
    assert set(other.text_ids[:, :2].flatten().tolist()) <= {2, 3}  # 'A' or unknown
    assert (other.text_ids[:, 2] == 1).all()  # {eos}


def test_refuses_a_dataset_without_text(tmp_path: Path) -> None:
    from ident3d import render as R
    from ident3d.latents import latent_model_from_options

    preset = load_preset("3dident")
    model = latent_model_from_options(space=preset.mapping("box").default_space(), sigma=0.1)
    job = R.RenderJob(preset=preset, mode="box", quality="fast", resolution=16,
                      objects=["teapot"], pairs=False, n=2, seed=0, model=model, renderer="mock")  # fmt: skip
    R.render_dataset(job, tmp_path / "img", workers=0, progress=False)
    with pytest.raises(UsageError, match="not an image/text dataset"):
        MultimodalDataset(tmp_path / "img")
    with pytest.raises(UsageError, match="not an ident3d dataset"):
        MultimodalDataset(tmp_path)
