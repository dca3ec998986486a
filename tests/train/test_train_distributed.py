"""Tests of ident3d.train.distributed: the all-gather with gradients, the global batch's loss
under DDP (2 gloo ranks on the CPU, spawned and through torchrun) against one process on the
concatenated batch, the per-rank split of the data, and resuming on another number of ranks."""

from __future__ import annotations

import copy
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import _rows

from ident3d.errors import UsageError
from ident3d.losses import build_loss
from ident3d.train import resolve_config, train
from ident3d.train.distributed import (
    all_gather_with_grad,
    average_gradients,
    check_split,
    global_batch_loss,
    rank_rows,
    sync_batchnorm,
)
from ident3d.train.sources import _StepBatches

HERE = Path(__file__).parent

#: every loss of ident3d.losses that uses negatives, in each form of negatives and anchors
LOSS_SPECS = {
    "infonce-l2-both": {"name": "infonce", "similarity": "lp", "p": 2.0},
    "infonce-l1-cross": {"name": "infonce", "similarity": "lp", "p": 1.0, "negatives": "cross"},
    "infonce-dot-oneway": {"name": "infonce", "similarity": "dot", "temperature": 0.5,
                           "symmetric": False},
    "nt-xent": {"name": "infonce", "similarity": "cosine", "temperature": 0.2},
    "infonce-hard": {"name": "infonce", "similarity": "lp", "p": 2.0, "hard_negative_beta": 0.8},
    "aninfonce": {"name": "aninfonce", "n": 3},
    "aninfonce-cross-hard": {"name": "aninfonce", "n": 3, "negatives": "cross",
                             "hard_negative_beta": 1.5, "symmetric": False},
    "ensemble": {"name": "ensemble", "members": [
        {"weight": 0.5, "loss": {"name": "infonce", "similarity": "lp", "p": 1.0}},
        {"weight": 2.0, "loss": {"name": "aninfonce", "n": 3}}]},
}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _close(a: torch.Tensor, ref: torch.Tensor) -> None:
    """Equal to float32 tolerance, relative to the reference's scale (a gradient that is zero
    in exact arithmetic, such as a bias under a translation-invariant loss, is ~1e-8)."""
    scale = float(ref.abs().max())
    torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6 + 1e-5 * scale)


def _known_answer_worker(rank: int, world: int, port: int) -> None:
    """Each rank: a DDP-wrapped linear encoder on its rows of a fixed global batch, the
    gathered loss, backward; then the same on one process (no gather) on the whole batch."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        _check_gather(rank, world)
        for batch in (8, 7):  # an even split (4 + 4) and an uneven one (3 + 4)
            g = torch.Generator().manual_seed(batch)
            x1 = torch.randn(batch, 5, generator=g)
            x2 = x1 + 0.3 * torch.randn(batch, 5, generator=g)
            torch.manual_seed(0)
            encoder = torch.nn.Linear(5, 3)
            lo, hi = rank_rows(batch, rank, world)
            for name, spec in LOSS_SPECS.items():
                # one process on the whole batch
                ref_enc = copy.deepcopy(encoder)
                ref_loss = build_loss(spec, torch.Generator().manual_seed(1))
                h = ref_enc(torch.cat([x1, x2]))
                whole = ref_loss(h[:batch], h[batch:])
                whole.backward()
                # this rank's rows, DDP and the gather
                ddp = DistributedDataParallel(copy.deepcopy(encoder))
                loss_fn = build_loss(spec, torch.Generator().manual_seed(1))
                h = ddp(torch.cat([x1[lo:hi], x2[lo:hi]]))
                b = hi - lo
                to_backward, loss = global_batch_loss(loss_fn, h[:b], h[b:], batch, world)
                to_backward.backward()
                average_gradients([p for p in loss_fn.parameters()], world)
                assert loss.item() == pytest.approx(whole.item(), rel=1e-5), name
                for p, r in zip(ddp.module.parameters(), ref_enc.parameters(), strict=True):
                    _close(p.grad, r.grad)
                for p, r in zip(loss_fn.parameters(), ref_loss.parameters(), strict=True):
                    _close(p.grad, r.grad)  # AnInfoNCE's theta
                # without the gather (each rank's own negatives) the loss is another one
                local = loss_fn(h[:b].detach(), h[b:].detach()).item()
                assert abs(local - whole.item()) > 1e-3, name
    except BaseException:
        dist.destroy_process_group()
        raise
    # Success: leave the group as `ident3d train` does (barrier, destroy) and end the rank with
    # os._exit, skipping the C++ static destructors where gloo's threads can abort a finished
    # rank ("terminate called without an active exception", SIGABRT: 1 CI run in ~20).
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _check_gather(rank: int, world: int) -> None:
    """Known answers: values in rank order; a non-contiguous input (a transposed view) and a
    use through non-contiguous views; each rank's gradient is the sum over the ranks."""
    base = torch.arange(6.0).reshape(2, 3) + 10 * rank  # rank r holds x = base.T, (3, 2)
    base.requires_grad_(True)
    x = base.T
    assert not x.is_contiguous()
    gathered = all_gather_with_grad(x)
    expect = torch.cat([(torch.arange(6.0).reshape(2, 3) + 10 * r).T for r in range(world)])
    assert torch.equal(gathered.detach(), expect)
    # rank r weighs column 0 by (r + 1) and column 1 by 10 (r + 1): non-contiguous views
    w = float(rank + 1)
    (w * gathered[:, 0].sum() + 10 * w * gathered[:, 1].sum()).backward()
    total = sum(r + 1.0 for r in range(world))
    assert torch.equal(base.grad, torch.tensor([[total] * 3, [10 * total] * 3]))
    # uneven rows: rank r holds r + 1 rows
    y = torch.full((rank + 1, 2), float(rank), requires_grad=True)
    gy = all_gather_with_grad(y, [r + 1 for r in range(world)])
    assert gy.shape == (sum(r + 1 for r in range(world)), 2)
    assert gy[:, 0].tolist() == [float(r) for r in range(world) for _ in range(r + 1)]
    (gy * (rank + 1)).sum().backward()
    assert torch.equal(y.grad, torch.full((rank + 1, 2), total))


def test_gather_and_every_loss_match_one_process_on_the_global_batch():
    """The known-answer test of the gather and of every loss with negatives: 2 gloo ranks
    (spawned) reproduce the loss and the parameter gradients (after DDP's average) of one
    process on the concatenated batch, for an even and an uneven split."""
    torch.multiprocessing.spawn(_known_answer_worker, args=(2, _free_port()), nprocs=2)


def test_rank_rows_split_the_batch_in_order():
    for batch, world in [(8, 2), (7, 2), (32, 3), (5, 5), (1000, 7)]:
        rows = [rank_rows(batch, r, world) for r in range(world)]
        assert rows[0][0] == 0 and rows[-1][1] == batch
        assert all(a[1] == b[0] for a, b in itertools.pairwise(rows))
        assert max(h - lo for lo, h in rows) - min(h - lo for lo, h in rows) <= 1
    with pytest.raises(UsageError, match="--batch-size 3 is smaller than the number of proc"):
        check_split(3, 4)
    check_split(4, 4)


@pytest.mark.parametrize("with_epoch", [False, True])
def test_step_batches_of_the_ranks_concatenate_to_the_one_process_batch(with_epoch):
    """The stored-dataset split: for every step (across epochs), the ranks' batches in rank
    order are the one-process batch, on 2 and 3 ranks and for an uneven split, so the data
    position does not depend on the number of ranks (resume on another number works)."""
    n, batch = 50, 12
    one = _StepBatches(n, batch, 3, 0, 20, 0, 1, with_epoch)
    for world in (2, 3, 5):
        ranks = [_StepBatches(n, batch, 3, 0, 20, r, world, with_epoch) for r in range(world)]
        for step in range(20):
            joined = [i for s in ranks for i in s.indices(step)]
            assert joined == one.indices(step), (world, step)


def test_batch_norm_is_synchronised_on_cuda_ranks_only():
    """On several CUDA ranks batch norm uses the global batch's statistics (SyncBatchNorm, as
    one process on the whole batch); the parameters, so the optimiser, and the state-dict keys
    stay. One process, or CPU ranks (PyTorch's SyncBatchNorm is CUDA-only): unchanged."""
    enc = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten()
    )
    keys = list(enc.state_dict())
    params = list(enc.parameters())
    assert sync_batchnorm(enc, torch.device("cpu"), 2) is enc
    assert sync_batchnorm(enc, torch.device("cuda", 0), 1) is enc
    synced = sync_batchnorm(enc, torch.device("cuda", 0), 2)
    assert isinstance(synced[1], torch.nn.SyncBatchNorm)
    assert all(a is b for a, b in zip(synced.parameters(), params, strict=True))
    assert list(synced.state_dict()) == keys
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 3))
    assert sync_batchnorm(mlp, torch.device("cuda", 0), 2) is mlp


def _cfg(steps: int, loss: str = "aninfonce", batch: int = 32) -> dict:
    return resolve_config(
        {
            "seed": 2,
            "steps": steps,
            "batch_size": batch,
            "data": {"kind": "synthetic", "n": 3, "cond_draws": 50},
            "model": {"hidden": [16, 16]},
            "loss": {"name": loss},
            "loop": {
                "device": "cpu",
                "threads": 1,
                "eval_samples": 64,
                "eval_every": 3,
                "checkpoint_every": 3,
            },
        }
    )


def _torchrun(nproc: int, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(nproc), *args]  # fmt: skip
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _ckpt(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def _same_run(a: Path, b: Path) -> None:
    """Two runs agree to float tolerance: every train row's loss, the weights, theta, and
    exactly: the data generator's state and the steps logged."""
    ra, rb = _rows(a, "train"), _rows(b, "train")
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-5), x["step"]
        assert x["negatives"] == y["negatives"]
    ca, cb = _ckpt(a), _ckpt(b)
    for k in ca["encoder"]:
        _close(ca["encoder"][k], cb["encoder"][k])
    for k in ca["loss"]:
        _close(ca["loss"][k], cb["loss"][k])
    assert torch.equal(
        ca["rng"]["source"][0]["data_generator"], cb["rng"]["source"][0]["data_generator"]
    )


def test_torchrun_two_ranks_reproduce_one_process_loss_and_gradients(tmp_path):
    """The issue's test: ``torchrun --standalone --nproc-per-node 2`` (gloo, CPU) through the
    harness's own step (set-up, DDP wrap, data source, gathered loss, backward) gives the
    one-process loss and gradients on the same global batch, for every kind of loss, on an
    even (8 = 4 + 4) and an uneven (7 = 3 + 4) split."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    script = str(HERE / "ddp_step_script.py")
    subprocess.run(
        [sys.executable, script, str(one), "8", "7"],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "WORLD_SIZE"},
    )
    _torchrun(2, [script, str(two), "8", "7"], tmp_path)
    files = sorted(one.iterdir())
    assert len(files) == 2 * 6
    for f in files:
        ref = torch.load(f, weights_only=True)
        for rank in (0, 1):
            got = torch.load(two / f.name.replace("rank0", f"rank{rank}"), weights_only=True)
            assert got["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-5), f.name
            for part in ("encoder", "loss_params"):
                assert got[part].keys() == ref[part].keys()
                for k in ref[part]:
                    _close(got[part][k], ref[part][k])


def test_single_process_run_resumes_on_two_ranks(tmp_path):
    """A one-process run checkpointed at step 3 resumes under torchrun on 2 ranks (today's
    IndexError in ``source.load_state``) and ends where the uninterrupted one-process run
    ends; the 2-rank rows log 2B - 2 negatives per anchor for the global batch of B = 32."""
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(_cfg(6), full)
    train(_cfg(3), resumed)
    _torchrun(2, ["-m", "ident3d", "--", "train", "--resume", "--steps", "6",
                  "--no-progress", "--out", str(resumed)], tmp_path)  # fmt: skip
    _same_run(full, resumed)
    rows = _rows(resumed, "train")
    assert [r["negatives"] for r in rows] == [2 * 32 - 2] * 6


@pytest.mark.slow
def test_two_rank_run_resumes_on_one_process_and_three_ranks_match(tmp_path):
    """The other direction (a 2-rank checkpoint continued by one process) and an uneven
    3-rank split (32 = 10 + 11 + 11) from the start, each against one process; NT-Xent-like
    InfoNCE (the synthetic default: dot product / 0.05 on the sphere)."""
    full = tmp_path / "full"
    train(_cfg(6, "infonce"), full)
    cfg3 = tmp_path / "three-steps.json"
    cfg3.write_text(json.dumps(_cfg(3, "infonce")))
    back = tmp_path / "back"
    _torchrun(2, ["-m", "ident3d", "--", "train", "--config", str(cfg3), "--no-progress",
                  "--out", str(back)], tmp_path)  # fmt: skip
    train(_cfg(6, "infonce"), back, resume=True)
    _same_run(full, back)
    cfg6 = tmp_path / "six-steps.json"
    cfg6.write_text(json.dumps(_cfg(6, "infonce")))
    three = tmp_path / "three"
    _torchrun(3, ["-m", "ident3d", "--", "train", "--config", str(cfg6), "--no-progress",
                  "--out", str(three)], tmp_path)  # fmt: skip
    _same_run(full, three)


@pytest.mark.slow
def test_torchrun_batch_smaller_than_the_ranks_is_one_line_per_rank(tmp_path):
    """Every rank refuses a global batch that leaves a rank without a pair, with the one
    line and exit status 2 (torchrun then reports the failed workers), and nothing is
    written."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3",
         "-m", "ident3d", "--", "train", "--data", "synthetic", "--n", "3", "--hidden", "16,16",
         "--batch-size", "2", "--steps", "2", "--threads", "1", "--device", "cpu",
         "--no-progress", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode != 0
    line = "error: --batch-size 2 is smaller than the number of processes (3)"
    assert (r.stdout + r.stderr).count(line) == 3
    assert "exitcode: 2" in r.stderr
    assert not out.exists()
