"""Tests of ident3d.store.export_card: the dataset card's generation command, rebuilt from the
manifest, makes the same dataset again."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from store_helpers import _cli

from ident3d import store


@pytest.mark.parametrize(
    "opts",
    [
        ["--conditional", "laplace", "--sigma", "0.2", "--dims", "0,1", "--pairs"],
        ["--singles", "--conditional", "none", "--marginal", "normal", "--marginal-scale", "0.5",
         "--mode", "box", "--shard-size", "3", "--compression", "lz4", "--seed", "4"],
        ["--preset", "3didentbox"],
    ],
    ids=["pairs-laplace", "singles-normal", "structured-preset"],
)  # fmt: skip
def test_generation_command_remakes_the_dataset(tmp_path, capsys, opts):
    first = tmp_path / "first"
    args = ["render", "--out", str(first), "--n", "6", "--renderer", "mock", "--resolution",
            "16", "--workers", "1", "--quiet", *opts]  # fmt: skip
    assert _cli(args, capsys)[0] == 0
    m1 = store.read_manifest(first)
    dst = tmp_path / "wds"
    store.export_webdataset(first, dst, workers=1, progress=False)
    card = (dst / "README.md").read_text()
    cmd = re.search(r"```bash\n(.+?)\n```", card).group(1)
    assert cmd == store.generation_command(m1)
    argv = shlex.split(cmd, comments=True)
    assert argv[:2] == ["ident3d", "render"]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert _cli([*argv[1:], "--workers", "1", "--quiet"], capsys)[0] == 0
    m2 = store.read_manifest(tmp_path / "again")
    assert m2["config"] == m1["config"]
    for key in ("kind", "n", "shard_size", "compression", "raw_dim", "height"):
        assert m2[key] == m1[key]
    a, b = (
        store.open_dataset(first).read_slice(0, 6),
        store.open_dataset(tmp_path / "again").read_slice(0, 6),
    )
    assert (a.images == b.images).all() and (a.raw == b.raw).all() and (a.scene == b.scene).all()
    assert json.dumps(m1["config"], indent=1, sort_keys=True) in card


def test_converted_dataset_command_and_unknown_config():
    m = {"config": {"origin": "converted", "source": {"path": "/data/3dident/train"}},
         "shard_size": 1000, "compression": "none"}  # fmt: skip
    assert store.generation_command(m) == (
        "ident3d convert /data/3dident/train DATASET --shard-size 1000 --compression none"
    )
    assert store.generation_command({"config": {"preset": "test"}}) is None
