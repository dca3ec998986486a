"""Tests of ident3d.data.knn_pair_dataset: kNN semantics, determinism, workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import _chw, make_store

from ident3d import data as D


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
