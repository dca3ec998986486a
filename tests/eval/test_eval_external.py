"""Tests of ident3d eval on encoders ident3d did not train (ident3d.eval.external, embeddings,
preprocess, benchmark, baseline): a user module from a .py file, a TorchScript file, a
torchvision model, precomputed embeddings, each against a known answer, and bad input."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import _main

N, H, W = 120, 32, 40

ENCODER_PY = '''
import torch
from torch import nn


class Stripes(nn.Module):
    """Mean of channel 0 over each of the 10 vertical stripes: affine in the latents."""

    def forward(self, x):
        return x[:, 0].reshape(x.shape[0], 32, 10, 4).mean(dim=(1, 3))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


def build():
    return Stripes()


def tiny():
    return Tiny()


def three():
    return 3


def pair():
    class Pair(nn.Module):
        def forward(self, x):
            return x.mean(), x.mean()

    return Pair()


def broken():
    raise RuntimeError("no GPU weights here")
'''


@pytest.fixture(scope="module")
def stripes(tmp_path_factory) -> tuple[Path, np.ndarray, Path]:
    """A store of N images whose channel 0 holds latent k in vertical stripe k (4 px wide);
    the other channels are noise. Returns the dataset, its latents and the encoder file."""
    from ident3d.latents import factor_table
    from ident3d.store import ShardWriter, create_dataset

    base = tmp_path_factory.mktemp("stripes")
    root = base / "ds"
    rng = np.random.default_rng(0)
    z = rng.uniform(-1, 1, (N, 10)).astype(np.float32)
    img = rng.integers(100, 156, (N, H, W, 3), dtype=np.uint8)
    for k in range(10):
        img[:, :, 4 * k : 4 * k + 4, 0] = np.round(127 + 120 * z[:, k])[:, None, None]
    create_dataset(root, "images", N, 50, H, W, 10, {"test": True}, factor_table())
    for s in range(3):
        a, b = 50 * s, min(N, 50 * s + 50)
        with ShardWriter(root, s, a, b - a, "images", H, W, 10) as w:
            w.write_batch(0, img[a:b], z[a:b], z[a:b])
    py = base / "user_encoder.py"
    py.write_text(textwrap.dedent(ENCODER_PY))
    return root, z, py


def _eval(args: list[str], capsys) -> tuple[int, str, str]:
    return _main(["eval", *args, "--no-progress"], capsys)


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _one_line_exit_2(args: list[str], capsys, match: str) -> None:
    code, _, err = _eval(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]


def test_user_module_from_a_py_file(stripes, tmp_path, capsys):
    root, _, py = stripes
    out = tmp_path / "rep"
    code, stdout, err = _eval(
        ["--encoder", f"{py}:build", "--data", str(root), "--out", str(out)], capsys
    )
    assert code == 0, err
    rep = _report(out)
    # the stripes encoder is an affine map of the latents (up to 8-bit rounding)
    assert rep["linear_r2"] > 0.999 and rep["kernel_r2"] > 0.98
    assert rep["mcc_pearson"] > 0.999
    src = rep["source"]
    assert src["form"] == "callable" and src["callable"] == f"{py}:build"
    assert src["sha256"] == __import__("hashlib").sha256(py.read_bytes()).hexdigest()
    assert src["class"] == "Stripes" and src["features"] == "logits"
    pre = rep["preprocessing"]
    assert pre["normalize"] == "dataset" and pre["resize"] is None and len(pre["mean"]) == 3
    assert rep["dataset"]["n"] == N and rep["encoding_dim"] == 10
    assert "callable" in stdout and "hue_background" in stdout
    assert f"callable {py}:build" in (out / "report.md").read_text()


def test_torchscript_file_gives_the_same_encodings(stripes, tmp_path, capsys):
    root, _, py = stripes
    from ident3d.eval import load_encoder

    module = load_encoder(f"{py}:build").module
    ts = tmp_path / "stripes.pt"
    torch.jit.script(module).save(str(ts))
    outs = {}
    for name, enc in (("py", f"{py}:build"), ("ts", str(ts))):
        outs[name] = tmp_path / name
        code, _, err = _eval(
            ["--encoder", enc, "--data", str(root), "--out", str(outs[name]), "--no-kernel",
             "--normalize", "none"],
            capsys,
        )  # fmt: skip
        assert code == 0, err
    a, b = _report(outs["py"]), _report(outs["ts"])
    assert b["source"]["form"] == "torchscript" and len(b["source"]["sha256"]) == 64
    assert b["linear_r2"] > 0.999
    assert a["linear_r2"] == pytest.approx(b["linear_r2"], abs=1e-12)
    assert a["preprocessing"]["normalize"] == "none" and a["preprocessing"]["mean"] is None
    # reports of external encoders compare like any others (labelled by their folders)
    code, stdout, err = _main(["eval", "--compare", str(outs["py"]), str(outs["ts"])], capsys)
    assert code == 0, err
    assert "py" in stdout and "ts" in stdout


def test_embeddings_known_answers(stripes, tmp_path, capsys):
    root, z, _ = stripes
    rng = np.random.default_rng(3)
    lin = tmp_path / "lin.npy"
    np.save(lin, z.astype(np.float64) @ rng.normal(size=(10, 10)))  # invertible (a.s.)
    rnd = tmp_path / "rnd.pt"
    # 2 random dims: held-out R^2 of noise is about -d / (n_fit - d), here -0.03
    torch.save(torch.randn(N, 2, generator=torch.Generator().manual_seed(0)), rnd)
    for f, out, kernel in (
        (lin, tmp_path / "lin", "--no-kernel"),
        (rnd, tmp_path / "rnd", "--kernel"),
    ):
        code, _, err = _eval(
            ["--embeddings", str(f), "--data", str(root), "--out", str(out), kernel], capsys
        )
        assert code == 0, err
    good, bad = _report(tmp_path / "lin"), _report(tmp_path / "rnd")
    assert good["linear_r2"] > 0.9999
    assert good["source"]["form"] == "embeddings" and good["source"]["shape"] == [N, 10]
    assert good["preprocessing"] is None
    assert abs(bad["linear_r2"]) < 0.15 and bad["kernel_r2"] < 0.15, bad["linear_r2"]


def test_torchvision_encoder_features_and_weights(stripes, tmp_path, capsys):
    import torchvision

    from ident3d.eval import encode_images, load_encoder

    root, _, _ = stripes
    torch.manual_seed(5)
    ref = torchvision.models.resnet18(weights=None).eval()
    w = tmp_path / "r18.pt"
    torch.save({"epoch": 3, "state_dict": ref.state_dict()}, w)
    ext = load_encoder("torchvision:resnet18", w, "state_dict")
    assert ext.source["weights"]["key"] == "state_dict" and ext.source["features"] == "penultimate"
    from ident3d.eval import Preprocess

    pre = Preprocess.build("imagenet", 48)
    enc = encode_images(root, lambda x: ext.module(pre(x)), torch.device("cpu"), n=4)
    ref.fc = torch.nn.Identity()
    from ident3d import store

    images = torch.from_numpy(store.open_dataset(root).read_slice(0, 4).images).permute(0, 3, 1, 2)
    with torch.no_grad():
        want = ref(pre(images)).double().numpy()
    assert enc.h.shape == (4, 512)
    np.testing.assert_allclose(enc.h, want, rtol=1e-4, atol=1e-5)

    out = tmp_path / "rep"
    code, _, err = _eval(
        ["--encoder", "torchvision:resnet18", "--weights", str(w), "--weights-key",
         "state_dict", "--features", "layer3", "--resize", "48", "--normalize", "imagenet",
         "--data", str(root), "--out", str(out), "--no-kernel", "--samples", "16",
         "--batch-size", "8"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rep = _report(out)
    assert rep["encoding_dim"] == 256 and rep["source"]["features"] == "layer3"
    assert rep["preprocessing"]["resize"] == [48, 48]
    assert (
        rep["source"]["weights"]["sha256"]
        == __import__("hashlib").sha256(w.read_bytes()).hexdigest()
    )
    assert rep["encode"]["batch_size"] == 8 and rep["encode"]["dtype"] == "float32"


def test_python_api_module_object_and_module_path(stripes, tmp_path, monkeypatch):
    import sys

    from ident3d import eval as ev
    from ident3d.eval import load_encoder

    root, _, py = stripes
    result, files = ev.evaluate_encoder(
        load_encoder(f"{py}:build").module, root, tmp_path / "api", kernel=False
    )
    assert result.report["linear_r2"] > 0.999
    assert result.report["source"]["form"] == "module"
    assert (tmp_path / "api" / "report.json") in files
    # MODULE:CALLABLE imports from the current directory (as `python -m` would)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "ident3d_test_user_mod.py").write_text(py.read_text())
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(cwd))])
    ext = load_encoder("ident3d_test_user_mod:Stripes")
    assert ext.source["callable"] == "ident3d_test_user_mod:Stripes"
    assert ext.source["sha256"] == __import__("hashlib").sha256(py.read_bytes()).hexdigest()
    assert type(ext.module).__name__ == "Stripes"


def test_baselines_are_seeded_and_pixels_pca_recovers_stripes(stripes, tmp_path, capsys):
    root, _, py = stripes
    from ident3d.eval import random_resnet18

    out = tmp_path / "a"
    code, stdout, err = _eval(
        ["--encoder", f"{py}:build", "--data", str(root), "--out", str(out), "--no-kernel",
         "--baseline", "--seed", "1", "--samples", "60"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    base = _report(out)["baselines"]
    assert set(base) == {"random_resnet18", "pixels_pca"}
    # raw pixels hold the latents linearly: the top 10 components recover them
    assert base["pixels_pca"]["linear_r2"] > 0.99 and base["pixels_pca"]["components"] == 10
    assert base["pixels_pca"]["pixels"] == [32, 32]
    assert base["random_resnet18"]["encoding_dim"] == 10 and base["random_resnet18"]["seed"] == 1
    assert base["random_resnet18"]["linear_r2"] < 0.9
    # seeded: the same initialisation again, another one for another seed
    p1, p2, p3 = (random_resnet18(10, s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert not torch.equal(p1["backbone.conv1.weight"], p3["backbone.conv1.weight"])
    assert "random-init ResNet18" in stdout
    assert "## Baselines" in (tmp_path / "a" / "report.md").read_text()


@pytest.mark.slow
def test_run_with_baseline(tmp_path, capsys, stripes):
    """--baseline on an ident3d run: the rows sit at the run's encoding width."""
    from eval_helpers import _train

    root, _, _ = stripes
    run = _train(
        {
            "data": {"kind": "dataset", "path": str(root)},
            "steps": 1,
            "batch_size": 8,
            "model": {"kind": "torchvision", "backbone": "resnet18", "n_out": 4},
            "loop": {"checkpoint_every": 1, "eval_every": 0, "threads": 1, "num_workers": 0},
        },
        tmp_path / "run",
    )
    out = tmp_path / "rep"
    code, _, err = _eval(
        ["--run", str(run), "--data", str(root), "--out", str(out), "--no-kernel",
         "--baseline", "--samples", "40"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rep = _report(out)
    assert rep["baselines"]["random_resnet18"]["encoding_dim"] == 4
    assert rep["baselines"]["pixels_pca"]["components"] == 4


def test_bad_input_is_one_line(stripes, tmp_path, capsys):
    root, _, py = stripes
    out = ["--data", str(root), "--out", str(tmp_path / "r"), "--no-kernel"]
    _one_line_exit_2(["--encoder", f"{py}:nothing", *out], capsys, "has no attribute 'nothing'")
    _one_line_exit_2(
        ["--encoder", f"{py}:three", *out], capsys, "returned a int, not a torch.nn.Module"
    )
    _one_line_exit_2(["--encoder", f"{py}:broken", *out], capsys, "no GPU weights here")
    _one_line_exit_2(["--encoder", f"{py}:pair", *out], capsys, "returned a tuple, not a tensor")
    _one_line_exit_2(["--encoder", "no_such_module_xyz:build", *out], capsys, "no module named")
    _one_line_exit_2(
        ["--encoder", str(tmp_path / "missing.py") + ":f", *out], capsys, "does not exist"
    )
    _one_line_exit_2(
        ["--encoder", "torchvision:resnet_nope", *out], capsys, "no classification model"
    )
    _one_line_exit_2(["--encoder", "plainword", *out], capsys, "none of these")
    _one_line_exit_2(
        ["--encoder", "torchvision:resnet18", "--features", "layer9", *out], capsys, "no layer"
    )
    _one_line_exit_2(
        ["--encoder", f"{py}:build", "--features", "penultimate", *out], capsys, "no linear layer"
    )
    _one_line_exit_2(
        ["--encoder", f"{py}:build", "--bf16", "--device", "cpu", *out], capsys, "CUDA"
    )
    _one_line_exit_2(["--encoder", f"{py}:build", "--resize", "abc", *out], capsys, "--resize")
    _one_line_exit_2(["--encoder", f"{py}:build", "--data", str(root)], capsys, "--out")
    _one_line_exit_2(["--encoder", f"{py}:build", "--run", str(root), *out], capsys, "exactly one")
    # the Tiny model on the wrong input size still runs; a wrong state dict does not load
    sd = tmp_path / "sd.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, sd)
    _one_line_exit_2(
        ["--encoder", f"{py}:tiny", "--weights", str(sd), *out], capsys, "do not match the encoder"
    )
    # weights that need unsafe unpickling are refused, never loaded
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "state_dict": {}}, unsafe)
    _one_line_exit_2(
        ["--encoder", f"{py}:tiny", "--weights", str(unsafe), *out],
        capsys,
        "needs unsafe unpickling",
    )
    _one_line_exit_2(
        ["--encoder", f"{py}:tiny", "--weights", str(sd), "--weights-key", "model", *out],
        capsys,
        "has no entry 'model'",
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not torch")
    _one_line_exit_2(["--encoder", str(junk), *out], capsys, "not a TorchScript file")
    _one_line_exit_2(
        ["--encoder", f"{py}:tiny", "--weights", str(junk), *out],
        capsys,
        "not a file that torch.load",
    )
    # embeddings: wrong row count, NaN, pickled objects, wrong shape, wrong suffix
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((N - 1, 3)))
    _one_line_exit_2(
        ["--embeddings", str(short), *out], capsys, f"has {N - 1} rows but the dataset has {N}"
    )
    nan = tmp_path / "nan.npy"
    arr = np.zeros((N, 3))
    arr[7, 1] = np.nan
    np.save(nan, arr)
    _one_line_exit_2(["--embeddings", str(nan), *out], capsys, "first: row 7")
    obj = tmp_path / "obj.npy"
    np.save(obj, np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    _one_line_exit_2(["--embeddings", str(obj), *out], capsys, "Python objects")
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(N))
    _one_line_exit_2(["--embeddings", str(flat), *out], capsys, "must be 2-D")
    txt = tmp_path / "h.txt"
    txt.write_text("1")
    _one_line_exit_2(["--embeddings", str(txt), *out], capsys, ".npy or .pt")
    ptd = tmp_path / "d.pt"
    torch.save({"h": torch.zeros(N, 2)}, ptd)
    _one_line_exit_2(["--embeddings", str(ptd), *out], capsys, "--embeddings-key")
    _one_line_exit_2(
        ["--embeddings", str(short), "--weights", str(sd), *out], capsys, "goes with --encoder"
    )
    _one_line_exit_2(
        ["--embeddings", str(short), "--data", "synthetic", "--out", str(tmp_path / "r")],
        capsys,
        "--data DIR",
    )
    assert not (tmp_path / "r").exists()


def test_embeddings_pt_dict_with_key(stripes, tmp_path, capsys):
    root, z, _ = stripes
    ptd = tmp_path / "d.pt"
    torch.save({"h": torch.from_numpy(z.astype(np.float64) * 2 + 1)}, ptd)
    code, _, err = _eval(
        ["--embeddings", str(ptd), "--embeddings-key", "h", "--data", str(root), "--out",
         str(tmp_path / "r"), "--no-kernel", "--samples", "40"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rep = _report(tmp_path / "r")  # --samples scores the first rows of the embeddings
    assert rep["linear_r2"] > 0.9999 and rep["n_samples"] == 40 and rep["source"]["key"] == "h"


@pytest.mark.gpu
def test_bf16_on_the_gpu(stripes, tmp_path, capsys):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    root, _, py = stripes
    out = tmp_path / "rep"
    code, _, err = _eval(
        ["--encoder", f"{py}:build", "--bf16", "--device", "cuda", "--data", str(root), "--out",
         str(out), "--no-kernel"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rep = _report(out)
    assert rep["encode"]["dtype"] == "bfloat16 autocast" and rep["linear_r2"] > 0.99


@pytest.mark.parametrize("n", [120, 40], ids=["covariance", "gram"])
def test_pixels_pca_matches_numpy_svd(stripes, monkeypatch, n):
    """Both PCA routes (n > pixel dims: covariance + projection; n <= dims: Gram matrix) give
    the scores of numpy's SVD of the centred pixels (compared through the R^2 they score)."""
    import ident3d.eval.baseline as bl
    from ident3d import store
    from ident3d.eval import Preprocess, evaluate

    root, z, _ = stripes
    monkeypatch.setattr(bl, "PIXEL_SIDE", 4)  # 4 x 4 x 3 = 48 pixel dimensions
    results = {}

    def score(h):
        results.setdefault("h", []).append(h)
        return evaluate(h, z[:n], kernel=False)

    rows = bl.baseline_rows(root, 5, Preprocess.build("none"), score, torch.device("cpu"), n=n)
    assert rows["pixels_pca"]["pca"] == ("covariance" if n > 48 else "Gram matrix")
    images = torch.from_numpy(store.open_dataset(root).read_slice(0, n).images).permute(0, 3, 1, 2)
    px = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255.0, (4, 4))
    px = px.reshape(n, -1).double()  # pooled in float32, as the baseline does
    xc = (px - px.mean(0)).numpy()
    u, sv, _ = np.linalg.svd(xc, full_matrices=False)
    want = u[:, :5] * sv[:5]
    got = results["h"][-1]
    # equal up to the sign of each component
    np.testing.assert_allclose(np.abs(got), np.abs(want), atol=1e-8)
    ev = (sv[:5] ** 2).sum() / (sv**2).sum()
    assert rows["pixels_pca"]["explained_variance"] == pytest.approx(ev, rel=1e-9)
