"""Logging of a run: ``metrics.jsonl`` (:class:`_MetricsLog`) and the buffered ``train`` rows
of the step loop (:class:`_StepLog`: losses stay on the device until a row is written)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ident3d.losses import mi_lower_bound
from ident3d.train.schedule import lr_factor


class _MetricsLog:
    """Appends JSON lines to ``metrics.jsonl``; truncates it on resume."""

    def __init__(self, path: Path, resume_bytes: int | None, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        try:
            if resume_bytes is None:
                path.write_text("")
            else:
                with open(path, "r+b") as f:
                    f.truncate(resume_bytes)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows``; an error names the file (a partial last line is cut off on resume:
        the checkpoint records the length that was complete)."""
        if not self.enabled or not rows:
            return
        try:
            with open(self.path, "a") as f:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
                f.flush()
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None

    def size(self) -> int:
        return self.path.stat().st_size if self.enabled else 0


class _StepLog:
    """The per-step losses (and lambdas), kept as device tensors and written to ``log`` as
    ``train`` rows by :meth:`flush`, so the loop waits for the device only when it logs."""

    def __init__(
        self,
        log: _MetricsLog,
        norm: Callable[[float], float],
        n_neg: int,
        optim: dict[str, Any],
        base_lr: float | None,
        total: int,
        step: int,
    ) -> None:
        self.log = log
        self.norm = norm
        self.n_neg = n_neg
        self.optim = optim
        self.base_lr = base_lr  # None: no schedule, no "lr" column
        self.total = total
        self.pending_loss: list[torch.Tensor] = []
        self.pending_lam: list[torch.Tensor] = []
        self.pending_steps: list[int] = []
        self.latest: dict[str, Any] = {}
        self.t_last, self.s_last = time.perf_counter(), step

    def add(self, step: int, loss: torch.Tensor, lam: torch.Tensor | None) -> None:
        self.pending_loss.append(loss.detach())
        if lam is not None:
            self.pending_lam.append(lam.detach())
        self.pending_steps.append(step)

    def flush(self) -> None:
        if not self.pending_steps:
            return
        losses = torch.stack(self.pending_loss).float().cpu().tolist()
        lams = torch.stack(self.pending_lam).float().cpu().tolist() if self.pending_lam else None
        rows = []
        for i, s in enumerate(self.pending_steps):
            lv = self.norm(losses[i])
            row: dict[str, Any] = {
                "kind": "train",
                "step": s,
                "loss": losses[i],
                "mi_bound": mi_lower_bound(lv, self.n_neg),
                "negatives": self.n_neg,
            }
            if lams is not None:
                row["lambda"] = lams[i]
            if self.base_lr is not None:
                row["lr"] = self.base_lr * lr_factor(self.optim, s - 1, self.total)
            rows.append(row)
        now = time.perf_counter()
        rows[-1]["steps_per_s"] = (self.pending_steps[-1] - self.s_last) / max(
            now - self.t_last, 1e-9
        )
        self.t_last, self.s_last = now, self.pending_steps[-1]
        self.latest["loss"] = losses[-1]
        self.log.write(rows)
        self.pending_loss.clear()
        self.pending_lam.clear()
        self.pending_steps.clear()
