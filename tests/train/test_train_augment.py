"""Tests of ident3d.train.augment: the batched operations against torchvision.transforms.v2 on
fixed parameter draws, the parameter laws, seeding, and the config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ident3d.errors import UsageError
from ident3d.train.augment import (
    Augment,
    AugmentSpec,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    augment_seed,
    check_augment_config,
    rgb_to_grayscale,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n=6, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, size, size), generator=g)


def _aug(**kw) -> Augment:
    return Augment(AugmentSpec(**kw), [0.0] * 3, [1.0] * 3, "cpu", (24, 24))


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (adjust_brightness, TF.adjust_brightness, [0.2, 0.7, 1.0, 1.3, 1.8, 1.55]),
        (adjust_contrast, TF.adjust_contrast, [0.2, 0.7, 1.0, 1.3, 1.8, 0.45]),
        (adjust_saturation, TF.adjust_saturation, [0.2, 0.7, 1.0, 1.3, 1.8, 0.0]),
        (adjust_hue, TF.adjust_hue, [-0.2, -0.05, 0.0, 0.1, 0.2, 0.17]),
    ],
)
def test_color_ops_match_torchvision(ours, theirs, factors):
    x = _images()
    f = torch.tensor(factors)
    got = ours(x.clone(), f)
    want = torch.stack([theirs(x[i], float(v)) for i, v in enumerate(factors)])
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)


def test_grayscale_matches_torchvision():
    x = _images()
    torch.testing.assert_close(
        rgb_to_grayscale(x).expand(-1, 3, -1, -1), TF.rgb_to_grayscale(x, 3), atol=1e-6, rtol=0
    )


def test_full_color_pipeline_on_a_fixed_draw():
    """The per-sample jitter order, the jitter mask and grayscale, against torchvision's
    functional ops applied one image at a time in the same order."""
    aug = _aug()
    x = _images(n=8)
    p = aug.sample(8, torch.Generator().manual_seed(3))
    p["jitter"][:] = torch.tensor([1, 1, 1, 1, 0, 1, 0, 1], dtype=torch.bool)
    p["gray"][:] = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    got = aug.color(x, p)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(8):
        y = x[i]
        if p["jitter"][i]:
            for op in p["order"][i].tolist():
                y = ops[op](y, float(p["factors"][i, op]))
        if p["gray"][i]:
            y = TF.rgb_to_grayscale(y, 3)
        torch.testing.assert_close(got[i], y, atol=3e-6, rtol=0)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_crop_flip_resize_matches_torchvision(interpolation):
    """A crop box resized to the output: grid_sample equals torchvision's resized_crop
    (no antialias) wherever the interpolation stays inside the box; the whole image exactly."""
    aug = _aug(crop_size=16, interpolation=interpolation)
    x = _images(n=3)
    p = aug.sample(3, torch.Generator().manual_seed(0))
    boxes = [(0, 0, 24, 24), (2, 5, 20, 18), (4, 1, 16, 22)]  # top, left, h, w (downscales)
    for k, name in enumerate(("top", "left", "height", "width")):
        p[name] = torch.tensor([float(b[k]) for b in boxes])
    p["flip"] = torch.tensor([False, True, False])
    got = aug.geometry(x, p)
    mode = getattr(v2.InterpolationMode, interpolation.upper())
    for i, (t, left, h, w) in enumerate(boxes):
        want = TF.resized_crop(x[i], t, left, h, w, [16, 16], interpolation=mode, antialias=False)
        if interpolation == "bicubic":
            want = want.clamp(0, 1)
        if p["flip"][i]:
            want = TF.horizontal_flip(want)
        inner = (slice(None), slice(2, -2), slice(2, -2))  # away from the box's border
        torch.testing.assert_close(got[i][inner], want[inner], atol=1e-5, rtol=0)
        if i == 0:
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


def test_rotations_are_torchvision_rotations():
    aug = _aug(crop_size=24, crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    x = _images(n=4)
    p = aug.sample(4, torch.Generator().manual_seed(0), torch.tensor([0, 1, 2, 3]))
    got = aug.geometry(x, p)
    for i in range(4):
        torch.testing.assert_close(got[i], TF.rotate(x[i], 90.0 * i), atol=1e-5, rtol=0)


def test_pairs_have_distinct_rotations_and_seeded_draws():
    aug = Augment(AugmentSpec(rotations=True, crop_size=16), [0.5] * 3, [0.25] * 3, "cpu", (24, 24))
    x = (torch.rand(64, 3, 24, 24) * 255).to(torch.uint8)
    g = torch.Generator().manual_seed(augment_seed(0, 5))
    v1, v2_ = aug.pair(x, g)
    assert v1.shape == v2_.shape == (64, 3, 16, 16) and v1.dtype == torch.float32
    g2 = torch.Generator().manual_seed(augment_seed(0, 5))
    w1, w2 = aug.pair(x, g2)
    assert torch.equal(v1, w1) and torch.equal(v2_, w2)
    g3 = torch.Generator().manual_seed(augment_seed(0, 6))
    assert not torch.equal(aug.pair(x, g3)[0], v1)
    r1 = torch.randint(0, 4, (64,), generator=torch.Generator().manual_seed(augment_seed(0, 5)))
    assert r1.numel() == 64
    assert augment_seed(0, 5) != augment_seed(0, 5, rank=1) != augment_seed(1, 5)
    with pytest.raises(UsageError, match="square images"):
        Augment(AugmentSpec(rotations=True), [0] * 3, [1] * 3, "cpu", (24, 32))


def test_parameter_laws():
    """Crop areas within the scale range (up to rounding), flips, jitter and grayscale at
    their probabilities, every jitter order a permutation, factors in their ranges."""
    aug = Augment(AugmentSpec(), [0] * 3, [1] * 3, "cpu", (64, 64))
    n = 20000
    p = aug.sample(n, torch.Generator().manual_seed(1))
    frac = p["height"] * p["width"] / 64**2
    assert float(frac.min()) > 0.06 and float(frac.max()) <= 1.0
    assert bool(((p["top"] + p["height"]) <= 64).all() and ((p["left"] + p["width"]) <= 64).all())
    for key, prob in (("flip", 0.5), ("jitter", 0.8), ("gray", 0.2)):
        assert abs(p[key].float().mean().item() - prob) < 0.015, key
    assert bool((p["order"].sort(1).values == torch.arange(4)).all())
    f = p["factors"]
    assert float(f[:, :3].min()) >= 0.2 and float(f[:, :3].max()) <= 1.8
    assert float(f[:, 3].abs().max()) <= 0.2
    large = Augment(AugmentSpec(crop_scale=(0.8, 1.0)), [0] * 3, [1] * 3, "cpu", (64, 64))
    q = large.sample(4000, torch.Generator().manual_seed(2))
    assert float((q["height"] * q["width"] / 64**2).min()) > 0.75


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("crop_size", 4, "crop_size"),
        ("crop_size", "big", "crop_size"),
        ("crop_scale", [0.5], "crop_scale"),
        ("crop_scale", [0.9, 0.5], "crop_scale"),
        ("jitter", [0.8, 0.8, 0.8, 0.7], "jitter"),
        ("jitter_p", 1.5, "jitter_p"),
        ("rotations", "yes", "rotations"),
        ("interpolation", "nearest", "interpolation"),
    ],
)
def test_config_checks(key, value, match):
    d = AugmentSpec().to_config()
    check_augment_config(d)
    d[key] = value
    with pytest.raises(UsageError, match=f"data.augment.{match}"):
        check_augment_config(d)


def test_spec_round_trip():
    s = AugmentSpec(crop_size=32, crop_scale=(0.8, 1.0), rotations=True)
    assert AugmentSpec.from_config(s.to_config()) == s
    assert AugmentSpec.from_config({"crop_size": "auto"}).crop_size is None
    assert np.isclose(AugmentSpec().ratio[0], 0.75)


# -- training with --views augment


def _store(root, kind="images", n=24, size=32, seed=0):
    from ident3d.latents import factor_table
    from ident3d.store import ShardWriter, create_dataset

    rng = np.random.default_rng(seed)
    shape = (n, size, size, 3) if kind == "images" else (n, 2, size, size, 3)
    zshape = (n, 10) if kind == "images" else (n, 2, 10)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    raw = rng.uniform(-1, 1, size=zshape).astype(np.float32)
    create_dataset(root, kind, n, n, size, size, 10, {"test": True}, factor_table())
    with ShardWriter(root, 0, 0, n, kind, size, size, 10) as w:
        w.write_batch(0, images, raw, raw)
    return root


def _cfg(path, **data):
    from ident3d.train import resolve_config

    return resolve_config(
        {
            "data": {"kind": "dataset", "path": str(path), "views": "augment", **data},
            "steps": 3,
            "batch_size": 8,
            "loop": {"checkpoint_every": 0, "eval_every": 0, "threads": 1, "num_workers": 0},
        }
    )


@pytest.mark.parametrize(
    ("kind", "resident"), [("images", False), ("pairs", False), ("images", True), ("pairs", True)]
)
def test_source_batches_are_augmented_and_seeded(tmp_path, kind, resident):
    from ident3d.train.sources import DatasetSource

    path = _store(tmp_path / "d", kind)
    cfg = _cfg(path, augment={"crop_size": 16, "rotations": True}, resident=resident)
    assert cfg["data"]["pairs"] == ("exact" if kind == "pairs" else "none")
    src = DatasetSource(cfg, torch.device("cpu"))
    a1, a2 = src.next_batch(0)
    assert a1.shape == a2.shape == (8, 3, 16, 16) and not torch.equal(a1, a2)
    src2 = DatasetSource(cfg, torch.device("cpu"))
    b1, b2 = src2.next_batch(0)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)  # a function of (seed, step)
    assert src.resident == resident
    x, z = src.eval_set()
    assert x.shape == (24, 3, 32, 32) and z.shape == (24, 10)  # eval: unaugmented images


def test_cli_train_views_augment(tmp_path, capsys):
    import json

    from train_helpers import _main_exit

    path = _store(tmp_path / "d")
    out = tmp_path / "run"
    code, err = _main_exit(
        ["train", "--data", str(path), "--views", "augment", "--crop-scale", "large",
         "--crop-size", "24", "--steps", "2", "--batch-size", "8", "--eval-every", "2",
         "--eval-samples", "16", "--threads", "1", "--num-workers", "0", "--no-progress",
         "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert code in (0, None), err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["views"] == "augment" and cfg["data"]["pairs"] == "none"
    assert cfg["data"]["augment"]["crop_scale"] == [0.8, 1.0]
    assert cfg["data"]["augment"]["crop_size"] == 24
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2]
    assert np.isfinite([r["loss"] for r in rows if r["kind"] == "train"]).all()
    assert any(r["kind"] == "eval" for r in rows) and (out / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--views", "augment", "--pairs", "knn"], "--views augment makes each positive pair"),
        (["--crop-size", "24"], "applies to --views augment only"),
        (["--views", "augment", "--crop-size", "4"], "data.augment.crop_size"),
        (["--views", "nope"], "nope"),
    ],
)
def test_cli_augment_bad_input(tmp_path, capsys, args, match):
    from train_helpers import _main_exit

    path = _store(tmp_path / "d", n=8, size=16)
    code, err = _main_exit(
        ["train", "--data", str(path), *args, "--steps", "1", "--batch-size", "4",
         "--out", str(tmp_path / "run")],
        capsys,
    )  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0]
    assert not (tmp_path / "run").exists()


def test_cli_augment_on_synthetic_data_and_rotations_on_non_square(tmp_path, capsys):
    from train_helpers import _main_exit

    from ident3d.store import ShardWriter, create_dataset

    code, err = _main_exit(
        ["train", "--data", "synthetic", "--views", "augment", "--out", str(tmp_path / "r")],
        capsys,
    )
    assert code == 2 and "not synthetic data" in err and len(err.strip().splitlines()) == 1
    root = tmp_path / "wide"
    create_dataset(root, "images", 8, 8, 16, 24, 10, {"test": True})
    with ShardWriter(root, 0, 0, 8, "images", 16, 24, 10) as w:
        w.write_batch(
            0, np.zeros((8, 16, 24, 3), np.uint8), np.zeros((8, 10), np.float32),
            np.zeros((8, 10), np.float32),
        )  # fmt: skip
    code, err = _main_exit(
        ["train", "--data", str(root), "--views", "augment", "--rotations", "--batch-size", "4",
         "--out", str(tmp_path / "r2")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "square images" in err and len(err.strip().splitlines()) == 1


@pytest.mark.gpu
def test_augment_on_cuda_matches_cpu():
    """On the GPU: the views stay on the device and equal the CPU's on the same parameters."""
    x = (torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(
        torch.uint8
    )
    cpu = Augment(AugmentSpec(crop_size=24, rotations=True), [0.5] * 3, [0.2] * 3, "cpu", (32, 32))
    gpu = Augment(AugmentSpec(crop_size=24, rotations=True), [0.5] * 3, [0.2] * 3, "cuda", (32, 32))
    p = cpu.sample(16, torch.Generator().manual_seed(1), torch.arange(16) % 4)
    want = cpu.view(x, p)
    got = gpu.view(x.cuda(), {k: v.cuda() for k, v in p.items()})
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=0)
    g = torch.Generator(device="cuda").manual_seed(augment_seed(0, 1))
    v1, v2_ = gpu.pair(x.cuda(), g)
    assert v1.device.type == v2_.device.type == "cuda" and v1.shape == (16, 3, 24, 24)


def test_a_pairs_runs_config_json_is_a_valid_config(tmp_path):
    """A dataset run's config.json repeats the augment defaults with views 'pairs': reading it
    back with --config must not count as asking for augmentations."""
    from ident3d.train import resolve_config

    path = _store(tmp_path / "d", "pairs", n=8, size=16)
    cfg = resolve_config({"data": {"kind": "dataset", "path": str(path)}, "batch_size": 4})
    assert cfg["data"]["views"] == "pairs" and cfg["data"]["augment"]["crop_size"] == "auto"
    again = resolve_config(cfg)
    assert again["data"]["views"] == "pairs" and again["data"]["pairs"] == "exact"
