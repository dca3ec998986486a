"""The word vocabulary of a caption set, built as the original loader builds it.

multimodal-contrastive-learning ``datasets.py`` lines 169-206: special tokens ``{pad}``,
``{eos}``, ``{unk}`` take ids 0, 1, 2; then every word in order of first occurrence over the
training captions. A caption becomes its word ids, then ``{eos}``, padded with ``{pad}`` to
``max_len`` (the longest caption + 1); an unknown word maps to ``{unk}``. Saved as JSON
``{"w2i": {...}, "i2w": {...}}`` (the original's file, ``vocab.json``), written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ident3d.errors import DataError

PAD, EOS, UNK = "{pad}", "{eos}", "{unk}"
SPECIAL_TOKENS = (PAD, EOS, UNK)


@dataclass(frozen=True)
class Vocabulary:
    """Word <-> id maps and the padded sequence length."""

    words: tuple[str, ...]  # id -> word
    max_len: int

    @classmethod
    def build(cls, tokenized: Iterable[Sequence[str]]) -> Vocabulary:
        words = list(SPECIAL_TOKENS)
        seen = set(words)
        longest = 0
        for toks in tokenized:
            longest = max(longest, len(toks))
            for w in toks:
                if w not in seen:
                    seen.add(w)
                    words.append(w)
        return cls(tuple(words), longest + 1)

    @property
    def size(self) -> int:
        return len(self.words)

    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, tokenized: Sequence[Sequence[str]]) -> np.ndarray:
        """int64 ``(N, max_len)`` ids; captions longer than ``max_len - 1`` are cut."""
        w2i = self.index()
        out = np.zeros((len(tokenized), self.max_len), np.int64)  # {pad} = 0
        unk, eos = w2i[UNK], w2i[EOS]
        for r, toks in enumerate(tokenized):
            ids = [*(w2i.get(w, unk) for w in toks[: self.max_len - 1]), eos]
            out[r, : len(ids)] = ids
        return out

    def to_json(self) -> dict[str, object]:
        return {
            "w2i": {w: i for i, w in enumerate(self.words)},
            "i2w": {str(i): w for i, w in enumerate(self.words)},
            "max_len": self.max_len,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            i2w = d["i2w"]
            words = tuple(i2w[str(i)] for i in range(len(i2w)))
            max_len = int(d["max_len"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path} is not a vocabulary file: {exc}.") from None
        if words[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS or max_len < 2:
            raise DataError(f"{path} is not a vocabulary file (special tokens or max_len).")
        return cls(words, max_len)
