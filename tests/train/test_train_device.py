"""Tests of ident3d.train.device: the single-process path."""

from __future__ import annotations

from ident3d.train import resolve_config, train


def test_single_process_path_does_not_initialise_distributed(tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "1")
    cfg = resolve_config({"steps": 3, "batch_size": 8, "data": {"kind": "synthetic", "n": 2},
                          "model": {"hidden": [8]},
                          "loop": {"eval_every": 0, "checkpoint_every": 0, "threads": 1}})  # fmt: skip
    train(cfg, tmp_path / "r", progress=False)
    assert not dist.is_initialized()
    assert (tmp_path / "r" / "checkpoints" / "last.pt").exists()  # the final checkpoint
