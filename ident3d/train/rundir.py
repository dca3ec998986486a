"""The run directory on disk: opening it (new or resumed), ``config.json``, checkpoint files
(written atomically, loaded strictly with ``torch.load(..., weights_only=True)``, format
:data:`CKPT_FORMAT`).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from ident3d.errors import UsageError
from ident3d.train.metrics_log import _MetricsLog
from ident3d.train.setup import _Trainer

CKPT_FORMAT = "ident3d-checkpoint/1"


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def _load_ckpt(path: Path) -> dict[str, Any]:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise UsageError(
            f"{path} is not a readable ident3d checkpoint ({exc.__class__.__name__})"
        ) from None
    if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
        raise UsageError(f"{path} is not an ident3d training checkpoint")
    return ck


def _open_run_dir(
    config: dict[str, Any], out: Path, resume: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config to train and the checkpoint to continue from (``None`` for a fresh start).

    With ``resume`` the run's own ``config.json`` is used (only ``steps`` may be raised) and
    ``checkpoints/last.pt`` loaded where it exists; otherwise ``out`` must be new or empty.
    """
    last = out / "checkpoints" / "last.pt"
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
    return config, ckpt


def _write_config(out: Path, config: dict[str, Any], resume: bool) -> None:
    """Create ``checkpoints/`` and write ``config.json`` (unless a resumed run's is the same)."""
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    if not resume or json.loads((out / "config.json").read_text()) != config:
        _atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())


def _save_checkpoint(t: _Trainer, log: _MetricsLog, out: Path) -> None:
    """Write ``checkpoints/step-<step>.pt`` and ``checkpoints/last.pt`` (main process; every
    process contributes its data source's state)."""
    sources = [t.source.state()]
    if t.dist.world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * t.dist.world
        dist.all_gather_object(gathered, t.source.state())
        sources = gathered
    if not t.dist.main:
        return
    state = {
        "format": CKPT_FORMAT,
        "step": t.step,
        "encoder": {k: v.detach().cpu() for k, v in t.encoder.state_dict().items()},
        "loss": {k: v.detach().cpu() for k, v in t.loss_fn.state_dict().items()},
        "optimizer": t.opt.state_dict(),
        "lambda_optimizer": t.lam_opt.state_dict() if t.lam_opt is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(t.device) if t.device.type == "cuda" else None,
            "source": sources,
        },
        "metrics_bytes": log.size(),
        **t.source.extra_checkpoint(),
    }
    ckpt_dir = out / "checkpoints"
    _atomic_torch_save(state, ckpt_dir / f"step-{t.step:08d}.pt")
    _atomic_torch_save(state, ckpt_dir / "last.pt")
