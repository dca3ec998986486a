"""The run directory on disk: opening it (new or resumed), ``config.json``, checkpoint files
(written atomically, loaded strictly with ``torch.load(..., weights_only=True)``, format
:data:`CKPT_FORMAT`).
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from ident3d.errors import DataError, UsageError
from ident3d.train.config import RUN_FORMAT, check_config_keys, resolve_data_path
from ident3d.train.metrics_log import _MetricsLog
from ident3d.train.setup import _Trainer

CKPT_FORMAT = "ident3d-checkpoint/1"


#: Errors of writing that the user can fix (a full disk, a quota, a read-only or foreign
#: directory): reported as one line naming the path instead of a traceback.
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


def write_error(path: Path, exc: OSError) -> UsageError | None:
    """The one-line error for a failed write of ``path`` (``None``: not the user's to fix)."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    return UsageError(f"cannot write {path}: {exc.strerror or exc}")


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write ``payload`` to a temporary name next to ``path`` and rename it; on failure the
    temporary file is removed and ``path`` is left as it was."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        err = write_error(path, exc) if isinstance(exc, OSError) else None
        if err is not None:
            raise err from None
        raise


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def read_run_config(path: Path) -> dict[str, Any]:
    """A run's ``config.json``, or a :class:`DataError` naming it when it is not one."""
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path} is not valid JSON (a damaged run config)") from None
    keys = ("steps", "batch_size", "seed", "data", "model", "loss", "loop", "optim")
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        raise DataError(f"{path} is not an ident3d run config")
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)}: not a complete ident3d run config")
    check_config_keys(cfg, path)
    return cfg


def _temp_files(out: Path) -> list[Path]:
    """Temporary files (``.NAME.tmpPID``) a killed process left in a run directory."""
    return [f for d in (out, out / "checkpoints") if d.is_dir() for f in d.glob(".*.tmp*")]


def _only_leftovers(out: Path) -> bool:
    """Whether ``out`` holds nothing but what a run killed before writing its config leaves:
    temporary files and an empty ``checkpoints/``."""
    temps = set(_temp_files(out))
    for f in out.iterdir():
        if f in temps:
            continue
        if f.name == "checkpoints" and f.is_dir() and all(c in temps for c in f.iterdir()):
            continue
        return False
    return True


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
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a run directory")
    if resume:
        if not (out / "config.json").is_file():
            raise UsageError(f"cannot resume: {out} has no config.json")
        saved = read_run_config(out / "config.json")
        if config.get("steps", saved["steps"]) > saved["steps"]:
            saved["steps"] = int(config["steps"])
        d = saved["data"]
        if d.get("kind") == "dataset":  # recorded relative by older versions
            d["path"] = resolve_data_path(d.get("path"), out)
            d["eval_path"] = resolve_data_path(d.get("eval_path"), out, "evaluation dataset")
        config = saved
        if last.is_file():
            ckpt = _load_ckpt(last)
    elif out.exists() and any(out.iterdir()) and not _only_leftovers(out):
        raise UsageError(f"run directory {out} is not empty; pass --resume to continue it")
    return config, ckpt


def _remove_temp_files(out: Path) -> None:
    """Remove the temporary files of a killed earlier process (this run's writer is the only
    one: a run directory is trained by one process at a time)."""
    for f in _temp_files(out):
        f.unlink(missing_ok=True)


def _write_config(out: Path, config: dict[str, Any], resume: bool) -> None:
    """Create ``checkpoints/`` and write ``config.json`` (unless a resumed run's is the same)."""
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        err = write_error(out / "checkpoints", exc)
        if err is None:
            raise
        raise err from None
    _remove_temp_files(out)
    if not resume or json.loads((out / "config.json").read_text()) != config:
        _atomic_write_bytes(out / "config.json", (json.dumps(config, indent=2) + "\n").encode())


def _save_checkpoint(t: _Trainer, log: _MetricsLog, out: Path) -> None:
    """Write ``checkpoints/step-<step>.pt`` and ``checkpoints/last.pt`` (main process). The
    data source's state is the same on every rank (each draws the global batch), so the
    checkpoint holds one, whatever the number of ranks."""
    if not t.dist.main:
        return
    sources = [t.source.state()]
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
