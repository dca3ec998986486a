"""Set-up of a training run: everything the step loop needs (:class:`_Trainer`), built from a
resolved config, restored from a checkpoint when resuming, and wrapped for distributed
training and ``torch.compile``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ident3d.losses import ContrastiveLoss, build_loss
from ident3d.models import build_encoder
from ident3d.train.device import _Dist, _init_distributed, _use_amp
from ident3d.train.distributed import check_split, sync_batchnorm
from ident3d.train.sources import _make_source, _stream_seed


@dataclass
class _Trainer:
    """The state of a run in training: config, devices, encoder, loss, optimisers, data source
    and the current ``step``; ``fwd`` is the (wrapped, compiled) forward pass."""

    config: dict[str, Any]
    dist: _Dist
    device: torch.device
    encoder: nn.Module
    loss_fn: ContrastiveLoss
    opt: torch.optim.Optimizer
    lam_opt: torch.optim.Optimizer | None
    loss_params: list[nn.Parameter]
    source: Any
    base_lrs: list[tuple[torch.optim.Optimizer, float]]
    scheduled: bool
    channels_last: bool
    step: int = 0
    fwd: Any = None
    amp: bool = False
    latest: dict[str, Any] = field(default_factory=dict)


def _set_up(config: dict[str, Any], ckpt: dict[str, Any] | None) -> _Trainer:
    """Devices, seeds, encoder, loss, optimisers and data source of a run (in this order: the
    torch RNG is seeded before the encoder is built)."""
    dist_info, device = _init_distributed(config["loop"].get("device", "auto"))
    check_split(int(config["batch_size"]), dist_info.world)
    threads = int(config["loop"].get("threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    seed = int(config["seed"])
    torch.manual_seed(seed)
    encoder = build_encoder(config["model"]).to(device)
    loss_gen = torch.Generator().manual_seed(_stream_seed(seed, 2))
    loss_fn: ContrastiveLoss = build_loss(config["loss"], loss_gen).to(device)
    is_image = config["model"]["kind"] == "torchvision"
    channels_last = is_image and bool(config["loop"].get("channels_last", True))
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(
        encoder.parameters(),
        lr=float(config["optim"]["lr"]),
        weight_decay=float(config["optim"].get("weight_decay", 0.0)),
    )
    loss_params = [p for p in loss_fn.parameters() if p.requires_grad]
    lam_opt = (
        torch.optim.Adam(loss_params, lr=float(config["optim"]["lambda_lr"]))
        if loss_params
        else None
    )
    source = _make_source(config, device, dist_info.rank, dist_info.world, ckpt)
    optim_cfg = config["optim"]
    base_lrs = [(opt, float(optim_cfg["lr"]))]
    if lam_opt is not None:
        base_lrs.append((lam_opt, float(optim_cfg["lambda_lr"])))
    scheduled = optim_cfg.get("schedule", "constant") != "constant" or bool(
        int(optim_cfg.get("warmup_steps", 0))
    )
    return _Trainer(
        config, dist_info, device, encoder, loss_fn, opt, lam_opt, loss_params, source,
        base_lrs, scheduled, channels_last,
    )  # fmt: skip


def _restore(t: _Trainer, ckpt: dict[str, Any] | None, resume: bool, out: Path) -> int | None:
    """Load the checkpoint's weights, optimiser and RNG states into ``t``; returns the length
    to truncate ``metrics.jsonl`` to (``None``: start a new file)."""
    if ckpt is not None:
        t.encoder.load_state_dict(ckpt["encoder"])
        t.loss_fn.load_state_dict(ckpt["loss"])
        t.opt.load_state_dict(ckpt["optimizer"])
        if t.lam_opt is not None:
            t.lam_opt.load_state_dict(ckpt["lambda_optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if t.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], t.device)
        # one state for all ranks (each draws the global batch and keeps its rows), so a
        # checkpoint of any number of ranks continues on any other
        t.source.load_state(ckpt["rng"]["source"][0])
        t.step = int(ckpt["step"])
        return int(ckpt["metrics_bytes"])
    if resume and (out / "metrics.jsonl").exists():
        return 0
    return None


def _wrap(t: _Trainer) -> None:
    """The forward pass: DistributedDataParallel across processes (batch norm over the global
    batch on CUDA ranks), ``torch.compile`` when the config asks for it; and whether it runs
    under bfloat16 autocast."""
    t.encoder = sync_batchnorm(t.encoder, t.device, t.dist.world)
    model: nn.Module = t.encoder
    if t.dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            t.encoder, device_ids=[t.device.index] if t.device.type == "cuda" else None
        )
    t.fwd = torch.compile(model) if t.config["loop"].get("compile") else model
    t.amp = _use_amp(t.config, t.device)
