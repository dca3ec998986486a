"""Checkpoint files: atomic writes into the run directory and strict loading
(``torch.load(..., weights_only=True)``, format :data:`CKPT_FORMAT`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from ident3d.errors import UsageError

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
