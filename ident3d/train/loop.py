"""The training loop: :func:`train` (and its metrics log and learning-rate schedule)."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ident3d.errors import UsageError
from ident3d.losses import ContrastiveLoss, EnsembleLoss, build_loss, mi_lower_bound
from ident3d.models import build_encoder
from ident3d.train.checkpoints import (
    CKPT_FORMAT,
    _atomic_torch_save,
    _atomic_write_bytes,
    _load_ckpt,
)
from ident3d.train.device import _init_distributed, _use_amp
from ident3d.train.scores import score
from ident3d.train.sources import _make_source, _stream_seed


class _MetricsLog:
    """Appends JSON lines to ``metrics.jsonl``; truncates it on resume."""

    def __init__(self, path: Path, resume_bytes: int | None, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        if resume_bytes is None:
            path.write_text("")
        else:
            with open(path, "r+b") as f:
                f.truncate(resume_bytes)

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        with open(self.path, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()

    def size(self) -> int:
        return self.path.stat().st_size if self.enabled else 0


def lr_factor(optim: dict[str, Any], step: int, total: int) -> float:
    """The learning-rate multiplier for optimisation step ``step`` (0-based) of ``total``.

    ``constant`` (the papers'): 1 after an optional linear warm-up. ``cosine``: linear warm-up
    over ``warmup_steps``, then a half cosine from 1 down to ``min_lr_ratio`` at the last step (``total - 1``).
    A pure function of the step, so a resumed run follows the same schedule bit for bit (as
    long as ``steps`` is not raised on resume: the cosine is stretched over the new total).
    Applied to the encoder's and the loss parameters' (AnInfoNCE lambda) optimisers alike.
    """
    warm = int(optim.get("warmup_steps", 0))
    if step < warm:
        return (step + 1) / warm
    if optim.get("schedule", "constant") == "constant":
        return 1.0
    lo = float(optim.get("min_lr_ratio", 0.0))
    span = max(total - warm - 1, 1)  # the last step (total - 1) runs at min_lr_ratio
    t = min(max(step - warm, 0) / span, 1.0)
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))


def train(
    config: dict[str, Any],
    out: str | Path,
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Train (or, with ``resume``, continue) the run described by ``config`` in ``out``.

    ``config`` is a resolved config (:func:`resolve_config`). With ``resume`` the run's own
    ``config.json`` is used (only ``steps`` may be raised) and training continues from
    ``checkpoints/last.pt`` exactly as if it had never stopped. Returns the run directory.
    """
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.pt"
    ckpt: dict[str, Any] | None = None
    if resume:
        if not (out / "config.json").is_file():
            raise UsageError(f"cannot resume: {out} has no config.json")
        saved = json.loads((out / "config.json").read_text())
        if config.get("steps", saved["steps"]) > saved["steps"]:
            saved["steps"] = int(config["steps"])
        config = saved
        if last.is_file():
            ckpt = _load_ckpt(last)
    elif out.exists() and any(out.iterdir()):
        raise UsageError(f"run directory {out} is not empty; pass --resume to continue it")

    dist_info, device = _init_distributed(config["loop"].get("device", "auto"))
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

    step = 0
    resume_bytes = None
    if ckpt is not None:
        encoder.load_state_dict(ckpt["encoder"])
        loss_fn.load_state_dict(ckpt["loss"])
        opt.load_state_dict(ckpt["optimizer"])
        if lam_opt is not None:
            lam_opt.load_state_dict(ckpt["lambda_optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        source.load_state(ckpt["rng"]["source"][dist_info.rank])
        step = int(ckpt["step"])
        resume_bytes = int(ckpt["metrics_bytes"])
    elif resume and (out / "metrics.jsonl").exists():
        resume_bytes = 0

    if dist_info.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        if not resume or json.loads((out / "config.json").read_text()) != config:
            _atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    log = _MetricsLog(out / "metrics.jsonl", resume_bytes, dist_info.main)

    model: nn.Module = encoder
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(
            encoder, device_ids=[device.index] if device.type == "cuda" else None
        )
    fwd = torch.compile(model) if config["loop"].get("compile") else model
    amp = _use_amp(config, device)
    batch = int(config["batch_size"])
    n_neg = loss_fn.n_negatives(batch // dist_info.world if dist_info.world > 1 else batch)
    norm = loss_fn.normalised if isinstance(loss_fn, EnsembleLoss) else (lambda v: v)
    loop = config["loop"]
    total = int(config["steps"])
    log_every = max(1, int(loop["log_every"]))

    show = progress if progress is not None else sys.stderr.isatty()
    bar = None
    if show and dist_info.main:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True)

    pending_loss: list[torch.Tensor] = []
    pending_lam: list[torch.Tensor] = []
    pending_steps: list[int] = []
    latest: dict[str, Any] = {}
    t_last, s_last = time.perf_counter(), step

    def flush() -> None:
        nonlocal t_last, s_last
        if not pending_steps:
            return
        losses = torch.stack(pending_loss).float().cpu().tolist()
        lams = torch.stack(pending_lam).float().cpu().tolist() if pending_lam else None
        rows = []
        for i, s in enumerate(pending_steps):
            lv = norm(losses[i])
            row: dict[str, Any] = {
                "kind": "train",
                "step": s,
                "loss": losses[i],
                "mi_bound": mi_lower_bound(lv, n_neg),
            }
            if lams is not None:
                row["lambda"] = lams[i]
            if scheduled:
                row["lr"] = base_lrs[0][1] * lr_factor(optim_cfg, s - 1, total)
            rows.append(row)
        now = time.perf_counter()
        rows[-1]["steps_per_s"] = (pending_steps[-1] - s_last) / max(now - t_last, 1e-9)
        t_last, s_last = now, pending_steps[-1]
        latest["loss"] = losses[-1]
        log.write(rows)
        pending_loss.clear()
        pending_lam.clear()
        pending_steps.clear()

    def evaluate() -> None:
        _, z = source.eval_set()
        encoder.eval()
        with torch.no_grad():
            h = source.encode_eval(encoder, amp).double().cpu().numpy()
        encoder.train()
        lam = loss_fn.lambdas()
        learned = None if lam is None else lam.detach().double().cpu().numpy()
        true = getattr(getattr(source, "dgp", None), "true_lambdas", None)
        row: dict[str, Any] = {"kind": "eval", "step": step, **score(h, z, learned, true)}
        log.write([row])
        latest.update(r2=row["r2"], mcc=row["mcc"])

    def checkpoint() -> None:
        sources = [source.state()]
        if dist_info.world > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * dist_info.world
            dist.all_gather_object(gathered, source.state())
            sources = gathered
        if not dist_info.main:
            return
        state = {
            "format": CKPT_FORMAT,
            "step": step,
            "encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
            "loss": {k: v.detach().cpu() for k, v in loss_fn.state_dict().items()},
            "optimizer": opt.state_dict(),
            "lambda_optimizer": lam_opt.state_dict() if lam_opt is not None else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "source": sources,
            },
            "metrics_bytes": log.size(),
            **source.extra_checkpoint(),
        }
        name = ckpt_dir / f"step-{step:08d}.pt"
        _atomic_torch_save(state, name)
        _atomic_torch_save(state, last)

    encoder.train()
    try:
        while step < total:
            if scheduled:
                f = lr_factor(optim_cfg, step, total)
                for o, lr0 in base_lrs:
                    for g in o.param_groups:
                        g["lr"] = lr0 * f
            x1, x2 = source.next_batch(step)
            if channels_last and x1.dim() == 4:
                x1 = x1.contiguous(memory_format=torch.channels_last)
                x2 = x2.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                h = fwd(torch.cat([x1, x2]))
            b = x1.shape[0]
            loss = loss_fn(h[:b].float(), h[b:].float())
            opt.zero_grad(set_to_none=True)
            if lam_opt is not None:
                lam_opt.zero_grad(set_to_none=True)
            loss.backward()
            if dist_info.world > 1 and loss_params:
                import torch.distributed as dist

                for p in loss_params:
                    if p.grad is not None:
                        dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
            opt.step()
            if lam_opt is not None:
                lam_opt.step()
            step += 1
            pending_loss.append(loss.detach())
            lam = loss_fn.lambdas()
            if lam is not None:
                pending_lam.append(lam.detach())
            pending_steps.append(step)
            do_eval = loop["eval_every"] and (step % int(loop["eval_every"]) == 0 or step == total)
            do_ckpt = loop["checkpoint_every"] and step % int(loop["checkpoint_every"]) == 0
            if step % log_every == 0 or do_eval or do_ckpt or step == total:
                flush()
                if bar is not None:
                    bar.update(step - bar.n)
            if do_eval and dist_info.main:
                evaluate()
            if do_ckpt or step == total:
                checkpoint()
            if bar is not None and latest:
                bar.set_postfix({k: f"{v:.4g}" for k, v in latest.items()}, refresh=False)
    finally:
        if bar is not None:
            bar.close()
        source.close()
    if echo is not None and dist_info.main:
        echo(
            f"trained {total} steps -> {out}" + "".join(f"  {k}={v:.4f}" for k, v in latest.items())
        )
    return out
