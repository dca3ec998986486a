"""Tests of ident3d.eval.factors and the discrete-factor / pair-structure scoring of ident3d eval:
a store whose manifest has typed factors and a pair structure, a known-answer encoder that
recovers the content block exactly and nothing of the style block, and bad manifests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from eval_helpers import _main
from torch import nn

from ident3d import eval as ev
from ident3d.errors import DataError, UsageError

NAMES = ["c0", "c1", "shape", "s0", "v0"]
TABLE = [
    {"name": "c0", "type": "continuous"},
    {"name": "c1"},  # no type: continuous
    {"name": "shape", "type": "discrete", "values": [-1.0, 0.0, 1.0]},
    {"name": "s0", "type": "continuous"},
    {"name": "v0", "type": "continuous"},
]
STRUCTURE = [
    {"name": "shared", "role": "content", "factors": ["c0", "c1", "shape"]},
    {"name": "looks", "role": "style", "factors": ["s0"]},
    {"name": "own", "role": "view", "factors": ["v0"]},
]
SIZE = 16


def _byte(v: np.ndarray) -> np.ndarray:
    return np.round((v + 1) * 127.5).astype(np.uint8)


def write_block_store(root: Path, n: int = 160, seed: int = 0, structure: Any = STRUCTURE) -> Path:
    """A pairs store of ``n`` samples: content (c0, c1, shape) identical in both views, style
    s0 perturbed, view-specific v0 constant 0 in view 2; three classes. Rows 0-3 of an image
    show the content (R = c0, G = c1, B = shape), rows 4-7 the class (R), rows 8-15 the style
    and view factors (R = s0, G = v0)."""
    from ident3d.store import ShardWriter, create_dataset

    rng = np.random.default_rng(seed)
    z = np.empty((n, 2, 5), np.float32)
    z[:, 0, :2] = rng.uniform(-1, 1, (n, 2))
    z[:, 0, 2] = rng.choice([-1.0, 0.0, 1.0], n)
    z[:, 0, 3] = rng.uniform(-1, 1, n)
    z[:, 0, 4] = rng.uniform(-1, 1, n)
    z[:, 1] = z[:, 0]
    z[:, 1, 3] = np.clip(z[:, 0, 3] + 0.3 * rng.normal(size=n), -1, 1)
    z[:, 1, 4] = 0.0
    cls = rng.integers(0, 3, n).astype(np.int32)
    img = np.zeros((n, 2, SIZE, SIZE, 3), np.uint8)
    for v in range(2):
        img[:, v, :4, :, 0] = _byte(z[:, v, 0])[:, None, None]
        img[:, v, :4, :, 1] = _byte(z[:, v, 1])[:, None, None]
        img[:, v, :4, :, 2] = _byte(z[:, v, 2])[:, None, None]
        img[:, v, 4:8, :, 0] = (cls * 80)[:, None, None].astype(np.uint8)
        img[:, v, 8:, :, 0] = _byte(z[:, v, 3])[:, None, None]
        img[:, v, 8:, :, 1] = _byte(z[:, v, 4])[:, None, None]
    create_dataset(
        root, "pairs", n, n, SIZE, SIZE, 5, {"test": "blocks"}, TABLE,
        has_class=True, class_names=["a", "b", "c"],
    )  # fmt: skip
    with ShardWriter(root, 0, 0, n, "pairs", SIZE, SIZE, 5, has_class=True) as w:
        w.write_batch(0, img, z, np.zeros((n, 2, 10), np.float32), cls)
    m = json.loads((root / "manifest.json").read_text())
    m["pair_structure"] = structure  # what the scm branch's renderer writes
    (root / "manifest.json").write_text(json.dumps(m))
    return root


class _ContentReader(nn.Module):
    """The known answer: reads the content rows and the class row, nothing else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x[:, :, :4].float().mean((2, 3))  # c0, c1, shape
        cls = x[:, 0, 4:8].float().mean((1, 2))[:, None]
        return torch.cat([top, cls], 1)


@dataclass
class _FakeRun:
    path: Path
    encoder: nn.Module = field(default_factory=_ContentReader)
    config: dict = field(default_factory=lambda: {"loss": {"name": "infonce"}, "model": {}})
    step: int = 7
    lambdas: Any = None
    dgp: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()  # pixel units: the class levels 0, 80, 160 are far apart


def test_known_answer_content_recovered_style_not(tmp_path, monkeypatch, capsys):
    import ident3d.train

    data = write_block_store(tmp_path / "data")
    monkeypatch.setattr(ident3d.train, "load_run", lambda path, dev: _FakeRun(Path(path)))
    out = tmp_path / "rep"
    code, stdout, err = _main(
        ["eval", "--run", str(tmp_path / "run"), "--data", str(data), "--out", str(out),
         "--kernel-fit", "60", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    pf = {f["name"]: f for f in rep["per_factor"]}
    assert list(pf) == [*NAMES, "class"]
    assert [f["type"] for f in rep["per_factor"]] == ["continuous"] * 2 + ["discrete"] + [
        "continuous"
    ] * 2 + ["discrete"]
    # discrete factors: accuracy, not R^2
    assert pf["shape"]["accuracy"] == 1.0 and pf["class"]["accuracy"] == 1.0
    assert pf["shape"]["linear_r2"] is None and pf["class"]["n_classes"] == 3
    assert rep["accuracy"] == 1.0 and rep["protocol"]["accuracy"]["factors"] == ["shape", "class"]
    b = rep["blocks"]
    assert b["shared"]["role"] == "content" and b["shared"]["theory"] == "recoverable"
    assert b["shared"]["r2"] > 0.999 and b["shared"]["accuracy"] == 1.0
    assert b["shared"]["kernel_r2"] > 0.99
    assert b["looks"]["role"] == "style" and b["looks"]["r2"] < 0.1
    assert b["own"]["role"] == "view" and b["own"]["r2"] < 0.1
    assert "accuracy" not in b["looks"]
    # R^2 and MCC cover the continuous factors only
    assert len(rep["mcc_matching"]["pearson"]) == 6 and rep["mcc_matching"]["pearson"][2] == -1
    md = (out / "report.md").read_text()
    assert "| shared | content | recoverable | c0, c1, shape, class |" in md
    assert "accuracy (held-out, discrete factors) | 1.0000" in md
    assert rep["blocks_from"] == "pair_structure" and "Roles from the dataset's pair" in md
    assert "blocks.png" in rep["figures"] and (out / "blocks.png").is_file()
    assert "shared" in stdout and "recoverable" in stdout


def test_dims_blocks_with_a_class(tmp_path):
    # a pairs store rendered with --dims: content = the kept factors, style = the changed ones
    from ident3d.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["render", "--renderer", "mock", "--mode", "box", "--out", str(tmp_path / "d"),
              "--n", "6", "--resolution", "16", "--dims", "hue_object,hue_spot", "--quiet",
              "--workers", "1", "--object", "teapot", "--object", "cube"])  # fmt: skip
    assert exc.value.code in (0, None)
    from ident3d.store import open_dataset

    stored = open_dataset(tmp_path / "d")
    z = stored.raw_latents()[:, 0].astype(np.float64)
    names = ev.factor_names(10)
    z2, info = ev.dataset_factors(tmp_path / "d", z, names, stored.classes(), ["teapot", "cube"])
    assert z2.shape == (6, 11) and info.types == ["continuous"] * 10 + ["discrete"]
    assert np.array_equal(z2[:, 10], stored.classes()) and info.names[10] == "class"
    assert info.classes[10] == ["teapot", "cube"] and info.values[10] == [0.0, 1.0]
    # the class is shared by both views of a pair: content
    # (the render records --dims as the pair structure: block "dims" style, "rest" content)
    assert info.blocks == {"dims": [7, 8], "rest": [0, 1, 2, 3, 4, 5, 6, 9, 10]}
    assert info.roles == {"dims": "style", "rest": "content"}
    assert info.block_source == "pair_structure"


def test_factor_info_and_labels():
    info = ev.factor_info(NAMES, TABLE, STRUCTURE)
    assert info.discrete == [2] and info.blocks["shared"] == [0, 1, 2]
    z = np.array([[0, 0, -0.9, 0, 0], [0, 0, 0.1, 0, 0], [0, 0, 1.0, 0, 0]], float)
    assert info.labels(z)[:, 0].tolist() == [0, 1, 2]
    # a table that does not describe the columns: all continuous, as before
    assert ev.factor_info(["a", "b"], TABLE).types == ["continuous"] * 2
    assert ev.factor_info(NAMES).blocks == {}


@pytest.mark.parametrize(
    ("table", "structure", "match"),
    [
        ([{**TABLE[0], "type": "ordinal"}, *TABLE[1:]], None, "has type 'ordinal'"),
        ([*TABLE[:2], {"name": "shape", "type": "discrete", "values": []}, *TABLE[3:]], None,
         "needs 'values'"),
        (TABLE, {"name": "x"}, "must be null or a list"),
        (TABLE, [{"name": "b", "role": "content"}], r"pair_structure\[0\] must be a table"),
        (TABLE, [{"name": "b", "role": "shared", "factors": ["c0"]}], "has role 'shared'"),
        (TABLE, [{"name": "b", "role": "style", "factors": ["hue"]}], "names factor 'hue'"),
        (TABLE, [{"name": "b", "role": "style", "factors": []}], "lists no factors"),
    ],
)  # fmt: skip
def test_bad_manifest_entries(table, structure, match):
    with pytest.raises(DataError, match=match):
        ev.factor_info(NAMES, table, structure, where="m.json")


def test_bad_pair_structure_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    import ident3d.train

    bad = [{"name": "b", "role": "style", "factors": ["nope"]}]
    data = write_block_store(tmp_path / "data", n=40, structure=bad)
    monkeypatch.setattr(ident3d.train, "load_run", lambda path, dev: _FakeRun(Path(path)))
    code, _, err = _main(
        ["eval", "--run", str(tmp_path / "run"), "--data", str(data), "--no-kernel",
         "--out", str(tmp_path / "rep"), "--no-progress"],
        capsys,
    )  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "names factor 'nope'" in lines[0] and "manifest.json" in lines[0]
    assert not (tmp_path / "rep").exists()


def test_evaluate_with_types():
    rng = np.random.default_rng(0)
    n = 400
    c = rng.uniform(-1, 1, (n, 2))
    k = rng.integers(0, 4, n)
    s = rng.uniform(-1, 1, n)
    h = np.concatenate([c, k[:, None] + 0.01 * rng.normal(size=(n, 1))], 1)
    z = np.concatenate([c, k[:, None], s[:, None]], 1)
    res = ev.evaluate(
        h, z, ["a", "b", "k", "s"], kernel=False,
        factor_types=["continuous", "continuous", "discrete", "continuous"],
        blocks={"content": [0, 1, 2], "style": [3]},
        block_roles={"content": "content", "style": "style"},
    )  # fmt: skip
    r = res.report
    assert r["per_factor"][2]["accuracy"] == 1.0 and r["per_factor"][2]["chance"] < 0.4
    assert r["blocks"]["content"]["r2"] > 0.999 and r["blocks"]["style"]["r2"] < 0.05
    assert r["blocks"]["content"]["per_factor"][2] is None
    assert "kernel_r2" not in r["blocks"]["content"]
    assert res.predictions["linear"].shape == (200, 3)  # the continuous factors
    assert r["linear_r2"] == pytest.approx(
        np.mean([r["per_factor"][i]["linear_r2"] for i in (0, 1, 3)])
    )
    with pytest.raises(UsageError, match="factor_types"):
        ev.evaluate(h, z, factor_types=["continuous"])
    with pytest.raises(UsageError, match="no continuous factor"):
        ev.evaluate(h, z[:, 2:3], factor_types=["discrete"], kernel=False)


def test_augment_runs_get_blocks_without_roles(tmp_path, monkeypatch, capsys):
    """A run trained on augmentation views: the dataset's pair roles do not describe its
    positive pairs, so its blocks are scored without a role or prediction."""
    import ident3d.train

    data = write_block_store(tmp_path / "data", n=40)
    cfg = {"loss": {"name": "infonce"}, "model": {}, "data": {"views": "augment"}}
    monkeypatch.setattr(
        ident3d.train, "load_run", lambda path, dev: _FakeRun(Path(path), config=cfg)
    )
    code, _, err = _main(
        ["eval", "--run", str(tmp_path / "run"), "--data", str(data), "--no-kernel",
         "--out", str(tmp_path / "rep"), "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert set(rep["blocks"]) == {"shared", "looks", "own"}
    assert all("role" not in b for b in rep["blocks"].values()) and "blocks_from" not in rep
