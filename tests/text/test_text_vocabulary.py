"""ident3d.text.vocabulary: the original loader's vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ident3d.errors import DataError
from ident3d.text.vocabulary import Vocabulary


def test_build_encode_save_load(tmp_path: Path) -> None:
    toks = [["A", "cow", "."], ["A", "red", "hare", "is", "here", "."]]
    v = Vocabulary.build(toks)
    assert v.words == ("{pad}", "{eos}", "{unk}", "A", "cow", ".", "red", "hare", "is", "here")
    assert v.max_len == 7
    ids = v.encode([["A", "cow", "."], ["A", "blue", "cow"]])
    assert ids.tolist() == [[3, 4, 5, 1, 0, 0, 0], [3, 2, 4, 1, 0, 0, 0]]
    path = v.save(tmp_path / "vocab.json")
    d = json.loads(path.read_text())
    assert d["w2i"]["cow"] == 4 and d["i2w"]["4"] == "cow"  # the original's file layout
    assert Vocabulary.load(path) == v
    (tmp_path / "bad.json").write_text('{"w2i": {}}')
    with pytest.raises(DataError, match="not a vocabulary file"):
        Vocabulary.load(tmp_path / "bad.json")
