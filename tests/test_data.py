"""Tests of ident3d.data: items match what was stored, multi-worker epochs, kNN semantics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ident3d import data as D
from ident3d.errors import DataError, UsageError
from ident3d.store import ShardWriter, create_dataset, export_original, shard_range

H, W = 8, 6


# ----------------------------------------------------------------------------- fixtures


def _images(n: int, rng: np.random.Generator, views: int = 0) -> np.ndarray:
    shape = (n, H, W, 3) if not views else (n, views, H, W, 3)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    # The first pixel encodes the sample index (and the view), so mix-ups are visible.
    if views:
        for v in range(views):
            img[:, v, 0, 0, 0] = np.arange(n) % 256
            img[:, v, 0, 0, 1] = v
    else:
        img[:, 0, 0, 0] = np.arange(n) % 256
    return img


def make_store(
    root: Path,
    n: int = 23,
    kind: str = "images",
    dim: int = 4,
    shard_size: int = 5,
    classes: np.ndarray | None = None,
    raw: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A small store dataset; returns (images, raw latents) as written."""
    rng = np.random.default_rng(seed)
    views = 2 if kind == "pairs" else 0
    images = _images(n, rng, views)
    if raw is None:
        shape = (n, dim) if kind == "images" else (n, 2, dim)
        raw = rng.uniform(-1, 1, shape).astype(np.float32)
    dim = raw.shape[-1]
    names = ["Teapot", "Hare", "Dragon"] if classes is not None else None
    manifest = create_dataset(root, kind, n, shard_size, H, W, dim, config={"test": True},
                              has_class=classes is not None, class_names=names)  # fmt: skip
    for k in range(manifest["num_shards"]):
        start, count = shard_range(manifest, k)
        with ShardWriter(root, k, start, count, kind, H, W, dim,
                         has_class=classes is not None) as w:  # fmt: skip
            scene = np.zeros((count, 2, 10) if views else (count, 10), np.float32)
            cls = None if classes is None else classes[start : start + count]
            w.write_batch(0, images[start : start + count], raw[start : start + count], scene, cls)
    return images, raw


def make_folder(root: Path, images: np.ndarray, raw: np.ndarray, suffix: str = "") -> None:
    """An original 3DIdent layout (zero padding ceil(log10 N), as the original loader)."""
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"raw_latents{suffix}.npy", raw)
    img_dir = root / f"images{suffix}"
    img_dir.mkdir()
    digits = int(np.ceil(np.log10(len(raw))))
    for i, img in enumerate(images):
        Image.fromarray(img).save(img_dir / f"{str(i).zfill(digits)}.png")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("data") / "images"
    images, raw = make_store(root)
    return root, images, raw


@pytest.fixture(scope="module")
def pairs_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("data") / "pairs"
    images, raw = make_store(root, n=17, kind="pairs", shard_size=4)
    return root, images, raw


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(img, -1, -3)))


# ----------------------------------------------------------------------------- images


def test_image_dataset_store_items_match(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, raw = store
    ds = D.ImageDataset(root)
    assert len(ds) == len(raw) and ds.layout == "store"
    for i in (0, 4, 5, 22, -1):
        x, z = ds[i]
        assert x.dtype == torch.uint8 and x.shape == (3, H, W)
        assert torch.equal(x, _chw(images[i]))
        assert z.dtype == torch.float32 and torch.equal(z, torch.from_numpy(raw[i]))
    # A batch: runs across shard boundaries, repeats, any order.
    idx = [3, 4, 5, 6, 0, 22, 22, 11]
    x, z = D.collate(ds.__getitems__(idx))
    assert x.shape == (len(idx), 3, H, W)
    assert torch.equal(x, _chw(images[idx]))
    assert torch.equal(z, torch.from_numpy(raw[idx]))
    # torch's default_collate on the same items gives the same batch.
    x2, z2 = torch.utils.data.default_collate(ds.__getitems__(idx))
    assert torch.equal(x2, x) and torch.equal(z2, z)
    assert "Number of datapoints: 23" in repr(ds)
    with pytest.raises(IndexError):
        ds[23]


def test_image_dataset_transforms(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, raw = store
    ds = D.ImageDataset(root, transform=lambda x: x.float() / 255, target_transform=lambda z: -z)
    x, z = ds[2]
    assert torch.allclose(x, _chw(images[2]).float() / 255)
    assert torch.equal(z, -torch.from_numpy(raw[2]))
    xb, _zb = D.collate(ds.__getitems__([2, 3]))
    assert torch.allclose(xb[1], _chw(images[3]).float() / 255)
    assert "Transform" in repr(ds)


def test_image_dataset_original_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images, raw = _images(12, rng), rng.uniform(-1, 1, (12, 10)).astype(np.float32)
    make_folder(tmp_path / "orig", images, raw)
    assert (tmp_path / "orig" / "images" / "00.png").exists()
    ds = D.ImageDataset(tmp_path / "orig")
    assert ds.layout == "3dident" and len(ds) == 12
    for i in range(12):
        x, z = ds[i]
        assert torch.equal(x, _chw(images[i])) and torch.equal(z, torch.from_numpy(raw[i]))
    x, z = D.collate(ds.__getitems__([5, 1]))
    assert torch.equal(x, _chw(images[[5, 1]]))
    mean = images.reshape(-1, 3).mean(0) / 255
    assert np.allclose(ds.mean, mean)


def test_causal3dident_layout_has_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    split = tmp_path / "c3d" / "trainset"
    parts = []
    for c, n in ((0, 4), (1, 7)):
        images, raw = _images(n, rng), rng.uniform(-1, 1, (n, 10)).astype(np.float32)
        make_folder(split, images, raw, suffix=f"_{c}")
        parts.append((c, images, raw))
    with pytest.raises(UsageError, match="trainset"):
        D.ImageDataset(tmp_path / "c3d")
    ds = D.ImageDataset(split)
    assert ds.layout == "causal3dident" and len(ds) == 11 and ds.class_names[1] == "Hare"
    x, z, c = ds[6]  # class 1, local index 2
    assert c == 1 and torch.equal(x, _chw(parts[1][1][2]))
    assert torch.equal(z, torch.from_numpy(parts[1][2][2]))
    xb, _zb, cb = D.collate(ds.__getitems__([0, 6]))
    assert cb.tolist() == [0, 1] and torch.equal(xb[1], x)


# ----------------------------------------------------------------------------- pairs


def test_pair_dataset_store_and_export(
    pairs_store: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    root, images, raw = pairs_store
    exported = export_original(root, tmp_path / "export", workers=1, progress=False)
    for path in (root, exported):
        ds = D.PairDataset(path)
        assert len(ds) == 17
        x, xt, z, zt = ds[9]
        assert torch.equal(x, _chw(images[9, 0])) and torch.equal(xt, _chw(images[9, 1]))
        assert torch.equal(z, torch.from_numpy(raw[9, 0])) and torch.equal(
            zt, torch.from_numpy(raw[9, 1])
        )
        idx = [16, 3, 4, 5]
        x, xt, z, zt = D.collate(ds.__getitems__(idx))
        assert torch.equal(x, _chw(images[idx, 0])) and torch.equal(xt, _chw(images[idx, 1]))
        assert torch.equal(z, torch.from_numpy(raw[idx, 0]))
        assert torch.equal(zt, torch.from_numpy(raw[idx, 1]))
    assert D.detect_layout(exported) == "pairs-folder"


# ----------------------------------------------------------------------------- bad input


def test_bad_input(
    store: tuple[Path, np.ndarray, np.ndarray],
    pairs_store: tuple[Path, np.ndarray, np.ndarray],
    tmp_path: Path,
) -> None:
    root, _, _ = store
    proot, _, _ = pairs_store
    with pytest.raises(DataError, match="does not exist"):
        D.ImageDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a dataset"):
        D.ImageDataset(tmp_path / "empty")
    with pytest.raises(UsageError, match="single images"):
        D.PairDataset(root)
    with pytest.raises(UsageError, match="PairDataset"):
        D.KNNPairDataset(proot)
    with pytest.raises(UsageError, match="holds pairs"):
        D.ImageDataset(proot)
    with pytest.raises(UsageError, match="conditional"):
        D.KNNPairDataset(root, conditional="bogus")
    with pytest.raises(UsageError, match="anchor"):
        D.KNNPairDataset(root, anchor="nearest")
    with pytest.raises(UsageError, match="batch_size"):
        D.make_loader(D.ImageDataset(root), 0)
    with pytest.raises(UsageError):
        D.GPUDataset(root, "cpu", mode="pairs")


# ----------------------------------------------------------------------------- workers


def _collect(loader: torch.utils.data.DataLoader, n: int) -> list[int]:
    seen = []
    for x, _z in loader:
        seen.extend(x[:, 0, 0, 0].tolist())  # the encoded sample index (n < 256)
        assert x.shape[1:] == (3, H, W)
    return seen


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_workers_every_index_once_per_epoch(
    store: tuple[Path, np.ndarray, np.ndarray], context: str
) -> None:
    root, _, raw = store
    ds = D.ImageDataset(root)
    loader = D.make_loader(ds, 4, shuffle=True, seed=3, num_workers=2, persistent_workers=True,
                           multiprocessing_context=context)  # fmt: skip
    orders = []
    for _ in range(2):
        seen = _collect(loader, len(raw))
        assert sorted(seen) == list(range(len(raw)))
        orders.append(seen)
    assert orders[0] != orders[1]  # reshuffled per epoch
    if context == "spawn":
        return
    # The plain DataLoader with torch's default collate works too.
    plain = torch.utils.data.DataLoader(
        ds, batch_size=5, num_workers=2, multiprocessing_context=context
    )
    assert sorted(_collect(plain, len(raw))) == list(range(len(raw)))


# ----------------------------------------------------------------------------- kNN semantics


class _Fixed:
    """A marginal or conditional that returns fixed rows (a known answer), ignoring the rng."""

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = np.asarray(rows, np.float64)

    def sample(self, *args: object) -> np.ndarray:
        return self.rows.copy()

    def to_config(self) -> dict[str, str]:
        return {"type": "fixed"}


# Stored latents (2-D): A=(0,0), B=(0.5,0), C=(-0.5,0), D=(0,0.9).
KNOWN = np.array([[0.0, 0.0], [0.5, 0.0], [-0.5, 0.0], [0.0, 0.9]], np.float32)


@pytest.fixture(scope="module")
def known(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("knn") / "known"
    images, _ = make_store(root, n=4, raw=KNOWN, shard_size=3)
    return root, images


def test_knn_known_answer_and_second_neighbour_rule(known: tuple[Path, np.ndarray]) -> None:
    root, images = known
    z = [[0.05, 0.0], [0.3, 0.05], [0.0, 0.8], [-0.2, 0.0]]
    zt = [[0.1, 0.0], [-0.3, 0.0], [0.0, 0.6], [-0.45, 0.1]]
    # item 0: z -> A, z~ -> A as well, so z~ takes its second neighbour B (0.4 away).
    # item 1: z -> B, z~ -> C (0.2 vs A 0.3). item 2: z -> D, z~ -> D too; second is A (0.6).
    # item 3: z -> A, z~ -> C.
    expect_i, expect_it, expect_fb = [0, 1, 3, 0], [1, 2, 0, 2], [True, False, True, False]
    ds = D.KNNPairDataset(
        root, conditional=_Fixed(zt), marginal=_Fixed(z), length=4, return_info=True
    )
    x, xt, zr, ztr, info = D.collate(ds.__getitems__([0, 1, 2, 3]))
    assert info["index"].tolist() == expect_i
    assert info["index_tilde"].tolist() == expect_it
    assert info["second_neighbour"].tolist() == expect_fb
    assert torch.equal(x, _chw(images[expect_i])) and torch.equal(xt, _chw(images[expect_it]))
    assert torch.equal(zr, torch.from_numpy(KNOWN[expect_i]))
    assert torch.equal(ztr, torch.from_numpy(KNOWN[expect_it]))
    assert np.allclose(info["dist_sampled"].numpy(), np.linalg.norm(np.subtract(z, zt), axis=1))
    assert np.allclose(
        info["dist_retrieved"].numpy(), np.linalg.norm(KNOWN[expect_i] - KNOWN[expect_it], axis=1)
    )
    # One item at a time gives the same answer as the batch.
    single = ds[2]
    assert int(single[4]["index_tilde"]) == 3 - 3 and bool(single[4]["second_neighbour"])
    summary = D.summarise_knn(info)
    assert summary["second_neighbour_fraction"] == 0.5 and summary["pairs"] == 4
    # Same rule in the torch backend and in the device-resident path (on the CPU here).
    ds_t = D.KNNPairDataset(
        root, conditional=_Fixed(zt), marginal=_Fixed(z), length=4, backend="torch"
    )
    assert ds_t.lookup([0, 1, 2, 3])["index_tilde"].tolist() == expect_it
    gpu = D.GPUDataset(root, "cpu", mode="knn", conditional=_Fixed(zt), length=4)
    gpu.knn.marginal = _Fixed(z)
    gx, gxt, _gz, _gzt, ginfo = gpu.get_batch([0, 1, 2, 3], return_info=True)
    assert (
        ginfo["index_tilde"].tolist() == expect_it
        and ginfo["second_neighbour"].tolist() == expect_fb
    )
    assert torch.equal(gx, x) and torch.equal(gxt, xt)


def test_knn_stored_anchor_and_classes(tmp_path: Path) -> None:
    # Two classes; lookups stay inside the anchor's class.
    raw = np.array([[0, 0], [0.5, 0], [0.05, 0], [0.6, 0]], np.float32)
    classes = np.array([0, 0, 1, 1])
    make_store(tmp_path / "cls", n=4, raw=raw, classes=classes, shard_size=2)
    zt = [[0.02, 0.0], [0.3, 0.0], [0.02, 0.0], [0.58, 0.0]]
    ds = D.KNNPairDataset(tmp_path / "cls", conditional=_Fixed(zt), anchor="stored")
    info = ds.lookup([0, 1, 2, 3])
    assert info["index"].tolist() == [0, 1, 2, 3]
    # item 0 (class 0): z~ nearest is 0 itself (2 is class 1) -> second neighbour 1.
    # item 1: z~=(0.3,0) -> 1 (0.2) -> itself -> 0. item 2 (class 1): -> 2 itself -> 3.
    # item 3: z~ -> 3 itself -> 2.
    assert info["index_tilde"].tolist() == [1, 0, 3, 2]
    assert info["second_neighbour"].all()


def test_knn_determinism_and_epochs(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = store
    ds = D.KNNPairDataset(root, sigma=0.3, seed=5)
    idx = list(range(len(ds)))
    a = ds.lookup([(0, i) for i in idx])
    b = D.KNNPairDataset(root, sigma=0.3, seed=5).lookup([(0, i) for i in reversed(idx)])
    assert np.array_equal(a["index_tilde"], b["index_tilde"][::-1])
    assert np.array_equal(a["z_sampled"], b["z_sampled"][::-1])
    c = ds.lookup([(1, i) for i in idx])
    assert not np.array_equal(a["z_sampled"], c["z_sampled"])
    d = D.KNNPairDataset(root, sigma=0.3, seed=6).lookup([(0, i) for i in idx])
    assert not np.array_equal(a["z_sampled"], d["z_sampled"])
    # The box truncation holds.
    assert np.abs(a["z_tilde_sampled"]).max() <= 1.0
    # Brute force agrees with the k-d tree on the rule.
    table = ds.latents.astype(np.float64)
    d1 = np.linalg.norm(a["z_sampled"].astype(np.float64)[:, None] - table[None], axis=2)
    assert np.array_equal(a["index"], d1.argmin(1))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_knn_loader_same_pairs_any_workers(
    store: tuple[Path, np.ndarray, np.ndarray], context: str
) -> None:
    root, _, _ = store
    results = []
    for workers, bs in ((0, 5), (2, 3)):
        ds = D.KNNPairDataset(root, sigma=0.2, seed=1, return_info=True)
        loader = D.make_loader(ds, bs, shuffle=True, seed=2, num_workers=workers,
                               persistent_workers=workers > 0,
                               multiprocessing_context=context if workers else None)  # fmt: skip
        pairs = []
        for epoch in range(2):
            items = []
            for x, xt, _z, _zt, info in loader:
                assert torch.equal(x[:, 0, 0, 0], info["index"] % 256)  # images match the indices
                assert torch.equal(xt[:, 0, 0, 0], info["index_tilde"] % 256)
                assert (info["epoch"] == epoch).all()
                items += info["item"].tolist()
                pairs += zip(info["epoch"].tolist(), info["item"].tolist(),
                             map(tuple, info["z_sampled"].tolist()), info["index"].tolist(),
                             info["index_tilde"].tolist(), strict=True)  # fmt: skip
            assert sorted(items) == list(range(len(ds)))  # every item exactly once per epoch
        results.append(sorted(pairs))
    assert results[0] == results[1]  # same pairs whatever the workers and batch size


@pytest.mark.parametrize("n", [1, 2, 700, 3000, 40_000])
def test_backends_agree_with_brute_force(n: int) -> None:
    rng = np.random.default_rng(n)
    table = rng.uniform(-1, 1, (n, 10)).astype(np.float32)
    q = rng.uniform(-1, 1, (300, 10))
    k = min(2, n)
    t64 = table.astype(np.float64)
    sq = (q**2).sum(1)[:, None] - 2 * q @ t64.T + (t64**2).sum(1)[None]
    true = np.sqrt(np.maximum(sq, 0))
    want = np.argsort(true, axis=1, kind="stable")[:, :k]
    for backend in ("blocks", "kdtree", "torch"):
        d, i = D.NearestNeighbours(table, backend, "cpu").query(q, k)
        d, i = np.asarray(d), np.asarray(i)
        assert np.array_equal(i, want), backend
        assert np.allclose(d, np.take_along_axis(true, want, 1), atol=1e-5), backend


def test_simulation_reproduces_original_gap() -> None:
    # Facts section 2: 250k uniform points in 10-D, sigma 0.1 -> retrieved ~0.81 vs sampled
    # ~0.30, ~40% second-neighbour fallbacks.
    s = D.simulate_knn(n_stored=250_000, dim=10, n_pairs=1500, sigma=0.1, seed=0)
    assert 0.28 < s["sampled_distance_mean"] < 0.32
    assert 0.76 < s["retrieved_distance_mean"] < 0.86
    assert 0.33 < s["second_neighbour_fraction"] < 0.47


def test_knn_diagnostics(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = store
    out = D.knn_diagnostics(root, sigma=0.1, n_pairs=50)
    assert out["pairs"] == 23 and out["stored"] == 23 and out["layout"] == "store"
    assert out["retrieved_distance_mean"] > out["sampled_distance_mean"]
    json.dumps(out)  # JSON-ready


# ----------------------------------------------------------------------------- device paths


def test_normalizer(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = store
    ds = D.ImageDataset(root)
    mean = images.reshape(-1, 3).mean(0) / 255
    std = images.reshape(-1, 3).std(0) / 255
    assert np.allclose(ds.mean, mean) and np.allclose(ds.std, std)
    x, _ = D.collate(ds.__getitems__([0, 1, 2]))
    y = ds.normalizer("cpu")(x)
    want = (x.float() / 255 - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert y.dtype == torch.float32 and torch.allclose(y, want.float(), atol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert abs(float(ds.normalizer()(torch.from_numpy(np.moveaxis(images, -1, 1))).mean())) < 1e-3


def test_gpu_dataset_on_cpu(
    store: tuple[Path, np.ndarray, np.ndarray], pairs_store: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    root, images, raw = store
    g = D.load_to_device(root, "cpu", chunk=7)
    x, z = g.get_batch([22, 0, 5])
    assert torch.equal(x, _chw(images[[22, 0, 5]])) and torch.equal(
        z, torch.from_numpy(raw[[22, 0, 5]])
    )
    seen = torch.cat([b[1] for b in g.batches(4, shuffle=True, epoch=1)])
    assert sorted(seen[:, 0].tolist()) == sorted(raw[:, 0].tolist())
    proot, pimages, praw = pairs_store
    gp = D.GPUDataset(proot, "cpu")
    x, xt, z, zt = gp.get_batch([1, 16])
    assert torch.equal(xt, _chw(pimages[[1, 16], 1])) and torch.equal(
        zt, torch.from_numpy(praw[[1, 16], 1])
    )
    # kNN on the device path: the same pairs as KNNPairDataset with the same seed and epoch.
    gk = D.GPUDataset(root, "cpu", mode="knn", sigma=0.2, seed=4)
    ref = D.KNNPairDataset(root, sigma=0.2, seed=4).lookup([(3, i) for i in range(len(raw))])
    x, xt, z, zt, info = gk.get_batch(list(range(len(raw))), epoch=3, return_info=True)
    assert np.array_equal(info["index"].numpy(), ref["index"])
    assert np.array_equal(info["index_tilde"].numpy(), ref["index_tilde"])
    assert torch.equal(x, _chw(images[ref["index"]]))
    assert "GPUDataset" in repr(gk)


@pytest.mark.gpu
def test_gpu_dataset_cuda(store: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, images, _ = store
    g = D.load_to_device(root, "cuda", mode="knn", sigma=0.2, seed=4)
    ref = D.KNNPairDataset(root, sigma=0.2, seed=4).lookup([(0, i) for i in range(len(images))])
    x, _xt, _z, _zt, info = g.get_batch(list(range(len(images))), return_info=True)
    assert x.is_cuda and np.array_equal(info["index_tilde"].cpu().numpy(), ref["index_tilde"])
    assert g.normalizer()(x).is_cuda


# ----------------------------------------------------------------------------- CLI


def test_cli_info_knn_diagnostics(
    store: tuple[Path, np.ndarray, np.ndarray],
    pairs_store: tuple[Path, np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ident3d.cli import main

    root, _, _ = store
    with pytest.raises(SystemExit) as exc:
        main(["info", str(root), "--knn-diagnostics", "--knn-sigma", "0.2"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "kNN pairs" in out and "sigma 0.2" in out and "second neighbour" in out
    proot, _, _ = pairs_store
    with pytest.raises(SystemExit) as exc:
        main(["info", str(proot), "--knn-diagnostics"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "PairDataset" in err[0]


def test_main_process_buffers_reused_only_when_released(
    store: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    root, images, _ = store
    ds = D.ImageDataset(root)
    a, _ = D.collate(ds.__getitems__([0, 1, 2]))
    a_copy = a.clone()
    b, _ = D.collate(ds.__getitems__([3, 4, 5]))  # a is still held: a new buffer
    assert a.data_ptr() != b.data_ptr() and torch.equal(a, a_copy)
    arr = b.numpy() if b.is_contiguous() else b.permute(0, 2, 3, 1).numpy()
    ptr_b = b.data_ptr()
    del b
    c, _ = D.collate(ds.__getitems__([6, 7, 8]))  # a numpy view of b still holds it
    assert c.data_ptr() not in (a.data_ptr(), ptr_b)
    assert np.array_equal(arr, images[[3, 4, 5]])
    ptr_c = c.data_ptr()
    del arr, c
    d, _ = D.collate(ds.__getitems__([9, 10, 11]))  # released buffers are reused
    assert d.data_ptr() in (ptr_b, ptr_c)
    assert torch.equal(a, a_copy) and torch.equal(d, _chw(images[[9, 10, 11]]))
