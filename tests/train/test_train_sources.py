"""Tests of ident3d.train.sources: training on stored datasets (exact and kNN pairs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import _main_exit, _rows, _run_cli

from ident3d.train import load_run


def _make_store(
    root: Path, kind: str, n: int, size: int = 32, dim: int = 3, classes: int = 0
) -> None:
    """A store whose images depend on the latents; with ``classes`` > 0 it has class labels
    (one per sample, drawn uniformly)."""
    from ident3d.store import ShardWriter, create_dataset, shard_range

    rng = np.random.default_rng(0)
    views = (n, 2) if kind == "pairs" else (n,)
    raw = rng.uniform(-1, 1, (*views, dim)).astype(np.float32)
    # images that depend on the latents, so an encoder can learn something
    base = ((raw[..., :1, None, None] + 1) * 120).astype(np.uint8)
    images = np.broadcast_to(base.reshape(*views, 1, 1, 1), (*views, size, size, 3)).copy()
    images[..., 0] = ((raw[..., 1:2, None] + 1) * 120).astype(np.uint8)
    cls = rng.integers(0, classes, n) if classes else None
    names = [f"class{c}" for c in range(classes)] if classes else None
    manifest = create_dataset(root, kind, n, 16, size, size, dim, config={"test": True},
                              has_class=bool(classes), class_names=names)  # fmt: skip
    for k in range(manifest["num_shards"]):
        start, count = shard_range(manifest, k)
        with ShardWriter(root, k, start, count, kind, size, size, dim,
                         has_class=bool(classes)) as w:  # fmt: skip
            scene = np.zeros((count, 2, 10) if kind == "pairs" else (count, 10), np.float32)
            c = None if cls is None else cls[start : start + count]
            w.write_batch(0, images[start : start + count], raw[start : start + count], scene, c)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stores")
    out = {"pairs": base / "pairs", "images": base / "images"}
    _make_store(out["pairs"], "pairs", 48)
    _make_store(out["images"], "images", 64)
    return out


DS_ARGS = [
    "--encoder", "resnet18", "--batch-size", "8", "--steps", "6", "--eval-every", "6",
    "--checkpoint-every", "3", "--eval-samples", "16", "--num-workers", "0", "--threads", "1",
    "--no-progress",
]  # fmt: skip


def test_dataset_exact_pairs_end_to_end_and_resume(tmp_path, stores):
    out = tmp_path / "run"
    code, msg = _run_cli(["train", "--data", str(stores["pairs"]), *DS_ARGS, "--out", str(out)])
    assert code == 0, msg
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["pairs"] == "exact" and len(cfg["data"]["mean"]) == 3
    assert cfg["model"]["n_out"] == 3 and cfg["model"]["head_features"] == 30
    ev = _rows(out, "eval")[-1]
    assert ev["step"] == 6 and len(ev["r2_per_dim"]) == 3
    run = load_run(out)
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    xp = run.preprocess(x)
    assert xp.shape == (2, 3, 32, 32) and xp.dtype == torch.float32
    mean = torch.tensor(cfg["data"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["data"]["std"]).view(1, 3, 1, 1)
    ref = (x.permute(0, 3, 1, 2).float() / 255 - mean) / std
    assert torch.allclose(xp, ref, atol=1e-5)
    assert run.encode(xp).shape == (2, 3)
    # the data position is a function of the step: resuming from step 3 ends identically
    part = tmp_path / "part"
    args = [a if a != "6" else "3" for a in DS_ARGS]
    assert _run_cli(["train", "--data", str(stores["pairs"]), *args, "--out", str(part)])[0] == 0
    assert (
        _run_cli(["train", "--resume", "--steps", "6", "--no-progress", "--out", str(part)])[0] == 0
    )
    a = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["encoder"]
    b = torch.load(part / "checkpoints" / "last.pt", weights_only=True)["encoder"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("resident", ["--no-resident", "--resident"])
def test_exact_pairs_with_classes_train(tmp_path, resident):
    """Causal3DIdent-style pairs (a class label per pair, which the pair datasets return as a
    fifth element): training reads them through the DataLoader and the resident path."""
    data = tmp_path / "cls"
    _make_store(data, "pairs", 48, classes=3)
    out = tmp_path / "run"
    code, msg = _run_cli(["train", "--data", str(data), *DS_ARGS, resident, "--out", str(out)])
    assert code == 0, msg
    assert _rows(out, "eval")[-1]["step"] == 6


def test_dataset_knn_pairs_from_iid_images(tmp_path, stores):
    out = tmp_path / "run"
    code, msg = _run_cli(
        ["train", "--data", str(stores["images"]), *DS_ARGS, "--steps", "3", "--out", str(out)]
    )
    assert code == 0, msg
    assert json.loads((out / "config.json").read_text())["data"]["pairs"] == "knn"
    assert _rows(out, "eval")[-1]["step"] == 3


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--data", "/nonexistent/dataset"], "does not exist"),
        (["--encoder", "resnet19"], "resnet19"),
        (["--batch-size", "1000"], "larger than the dataset"),
        (["--pairs", "exact", "--data-kind-images"], "single images"),
    ],
)
def test_bad_dataset_input_exits_2(tmp_path, stores, capsys, args, fragment):
    data = stores["pairs"]
    if "--data-kind-images" in args:
        args = [a for a in args if a != "--data-kind-images"]
        data = stores["images"]
    full = ["train", "--data", str(data), *DS_ARGS, *args, "--out", str(tmp_path / "r")]
    if "--data" in args:
        full = ["train", *DS_ARGS, *args, "--out", str(tmp_path / "r")]
    code, err = _main_exit(full, capsys)
    assert code == 2
    assert err.startswith("error:") and fragment in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "edit",
    [("height", 16), ("kind", "images"), ("width", 16)],
    ids=["height", "kind", "width"],
)
def test_manifest_that_does_not_match_its_shards(tmp_path, stores, capsys, edit):
    """A manifest whose height or kind was edited: train (and a resumed train) say so in one
    line naming the dataset, before anything is written."""
    import shutil

    data = tmp_path / "edited"
    shutil.copytree(stores["pairs"], data)
    m = json.loads((data / "manifest.json").read_text())
    m[edit[0]] = edit[1]
    (data / "manifest.json").write_text(json.dumps(m))
    out = tmp_path / "r"
    code, err = _main_exit(["train", "--data", str(data), *DS_ARGS, "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert str(data) in err and "ident3d verify" in err
    assert not out.exists()
    # a run made before the edit: --resume reads the data again and refuses the same way
    good = tmp_path / "good"
    shutil.copytree(stores["pairs"], good)
    code, err = _main_exit(["train", "--data", str(good), *DS_ARGS, "--steps", "3",
                            "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    (good / "manifest.json").write_text(json.dumps({**json.loads((good / "manifest.json")
                                                                 .read_text()), edit[0]: edit[1]}))  # fmt: skip
    code, err = _main_exit(["train", "--resume", "--steps", "6", "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and str(good) in err, err


def test_dataset_paths_are_recorded_absolute(tmp_path, stores, capsys, monkeypatch):
    """A run records the dataset's absolute path, so --resume works from any directory; a
    relative path of an older run is found next to the run, or in the current directory."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(stores["pairs"], work / "data" / "pairs")
    monkeypatch.chdir(work)
    code, err = _main_exit(["train", "--data", "data/pairs", "--eval-data", "data/pairs",
                            *DS_ARGS, "--steps", "3", "--out", "runs/a"], capsys)  # fmt: skip
    assert code == 0, err
    cfg = json.loads((work / "runs" / "a" / "config.json").read_text())
    assert cfg["data"]["path"] == str(work / "data" / "pairs")
    assert cfg["data"]["eval_path"] == str(work / "data" / "pairs")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = work / "runs" / "a"
    code, err = _main_exit(["train", "--resume", "--steps", "6", "--out", str(run)], capsys)
    assert code == 0, err
    # an old run with a relative path, typed in the run directory's parent
    old = work / "old"
    shutil.copytree(run, old / "run")
    shutil.copytree(stores["pairs"], old / "pairs")
    cfg = json.loads((old / "run" / "config.json").read_text())
    cfg["data"]["path"] = cfg["data"]["eval_path"] = "pairs"
    (old / "run" / "config.json").write_text(json.dumps(cfg))
    code, err = _main_exit(["train", "--resume", "--steps", "9", "--out", str(old / "run")],
                           capsys)  # fmt: skip
    assert code == 0, err
    saved = json.loads((old / "run" / "config.json").read_text())
    assert saved["data"]["path"] == str(old / "pairs") and saved["steps"] == 9
    # neither next to the run nor here: one line naming both places
    cfg["data"]["path"] = "missing"
    (old / "run" / "config.json").write_text(json.dumps(cfg))
    code, err = _main_exit(["train", "--resume", "--steps", "12", "--out", str(old / "run")],
                           capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert str(old / "missing") in err and str(elsewhere / "missing") in err


def _flip_an_image_byte(root: Path) -> None:
    """Flip one byte of the first image of the first shard, in place (the HDF5 structure and
    every size stay valid: only a checksum can tell)."""
    import h5py

    shard = sorted(root.glob("shard-*.h5"))[0]
    with h5py.File(shard, "r") as f:
        offset = f["images"].id.get_chunk_info(0).byte_offset
    with open(shard, "r+b") as fh:
        fh.seek(offset + 100)
        b = fh.read(1)
        fh.seek(offset + 100)
        fh.write(bytes([b[0] ^ 0xFF]))


def test_flipped_image_bytes_are_refused_before_training(tmp_path, stores, capsys):
    """Flipped bytes in a shard load silently through the datasets (no hashing per read), so
    `ident3d train` verifies every shard's SHA-256 first, on a fresh run and on --resume;
    --no-verify-data trains anyway."""
    import shutil

    data = tmp_path / "flipped"
    shutil.copytree(stores["pairs"], data)
    out = tmp_path / "r"
    code, err = _main_exit(["train", "--data", str(data), *DS_ARGS, "--steps", "3",
                            "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    _flip_an_image_byte(data)
    from ident3d.data import PairDataset

    assert PairDataset(data)[0] is not None  # the datasets themselves do not notice
    code, err = _main_exit(["train", "--resume", "--steps", "6", "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: dataset {data} failed verification: shard-00000.h5"), err
    fresh = tmp_path / "r2"
    code, err = _main_exit(["train", "--data", str(data), *DS_ARGS, "--out", str(fresh)], capsys)
    assert code == 2 and "failed verification" in err and not fresh.exists(), err
    code, err = _main_exit(["train", "--data", str(data), *DS_ARGS, "--no-verify-data",
                            "--steps", "3", "--out", str(fresh)], capsys)  # fmt: skip
    assert code == 0, err
