"""The image/text dataset (Multimodal3DIdent): item ``i`` is ``(image, text, z_image, z_text)``.

``image`` uint8 ``(3, H, W)`` (channels-last memory, as every ident3d dataset); ``text`` int64
``(L,)`` word ids of the caption, then ``{eos}``, padded with ``{pad}`` (the original loader's
encoding, multimodal-contrastive-learning ``datasets.py`` lines 217-247, as ids instead of
one-hot rows); ``z_image`` float32 ``(11,)`` (``IMAGE_COLUMNS``); ``z_text`` int64 ``(7,)``
(``TEXT_INT_COLUMNS``). Words come from :func:`ident3d.text.word_tokenize` (no NLTK data).

The vocabulary is built from this dataset's captions and saved beside it as ``vocab.json``
(the original loader's file) unless one is given: pass the training split's
``ds.vocabulary`` to its validation and test splits, as the original does. Reads image/text
datasets in the store (convert a Multimodal3DIdent folder first: ``ident3d convert``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ident3d.data.buffers import _chw, _Items
from ident3d.data.dataset_base import _Base
from ident3d.data.sampler import _split_index
from ident3d.errors import UsageError
from ident3d.latents.multimodal import DISCRETE, IMAGE_COLUMNS, TEXT_INT_COLUMNS
from ident3d.store.manifest import read_manifest
from ident3d.store.multimodal import read_text, require_multimodal
from ident3d.text.tokenizer import word_tokenize
from ident3d.text.vocabulary import Vocabulary

VOCAB_FILE = "vocab.json"


class MultimodalDataset(_Base):
    """Image/text pairs with their image and text latents (see the module docstring)."""

    IMAGE_FACTORS = IMAGE_COLUMNS
    TEXT_FACTORS = TEXT_INT_COLUMNS
    DISCRETE_FACTORS = DISCRETE

    def __init__(
        self,
        path: str | os.PathLike[str],
        vocabulary: Vocabulary | str | os.PathLike[str] | None = None,
        transform: Callable[[Any], Any] | None = None,
        save_vocabulary: bool = True,
    ) -> None:
        p = Path(path)
        if not (p / "manifest.json").is_file():
            raise UsageError(
                f"{p} is not an ident3d dataset; convert a Multimodal3DIdent split first "
                "(ident3d convert SRC DST --split train)."
            )
        require_multimodal(p)
        super().__init__(p, transform, None, False)
        table = read_text(p)
        self.captions = table.captions
        self.color_names = table.color_names
        self.text_latents = table.latents
        self.tokens = [word_tokenize(c) for c in self.captions]
        if isinstance(vocabulary, Vocabulary):
            self.vocabulary = vocabulary
        elif vocabulary is not None:
            self.vocabulary = Vocabulary.load(vocabulary)
        elif (p / VOCAB_FILE).is_file():
            self.vocabulary = Vocabulary.load(p / VOCAB_FILE)
        else:
            self.vocabulary = Vocabulary.build(self.tokens)
            if save_vocabulary:
                self.vocabulary.save(p / VOCAB_FILE)
        self.text_ids = torch.from_numpy(self.vocabulary.encode(self.tokens))
        self._z_text = torch.from_numpy(self.text_latents.astype(np.int64))
        self.manifest = read_manifest(p)

    @property
    def vocab_size(self) -> int:
        return self.vocabulary.size

    @property
    def max_sequence_length(self) -> int:
        return self.vocabulary.max_len

    def extra_repr(self) -> str:
        return f"Text: {len(self.captions)} captions, vocabulary of {self.vocab_size} words"

    def __getitem__(self, index: Any) -> tuple[Any, ...]:
        _, i = _split_index(index)
        i = self.source.check_index(i)
        x: Any = self._image_tensor(i)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.text_ids[i].clone(), self._latents_tensor(i), self._z_text[i].clone()

    def __getitems__(self, indices: Sequence[Any]) -> list[Any]:
        idx = [self.source.check_index(_split_index(i)[1]) for i in indices]
        if self.transform is not None:
            return _Items(items=[self[i] for i in idx])
        images = _chw(self._read_batch(idx))
        return _Items(
            (
                images,
                self.text_ids[idx],
                torch.from_numpy(self.source.latents()[idx]),
                self._z_text[idx],
            )
        )
