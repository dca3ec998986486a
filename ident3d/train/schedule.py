"""The learning-rate schedule: :func:`lr_factor` (constant or cosine, with linear warm-up), a
pure function of the step, and its application to the optimisers before each step."""

from __future__ import annotations

import math
from typing import Any

import torch


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


def _apply_lr(
    base_lrs: list[tuple[torch.optim.Optimizer, float]],
    optim: dict[str, Any],
    step: int,
    total: int,
) -> None:
    """Set every parameter group's learning rate for step ``step`` (0-based) of ``total``."""
    f = lr_factor(optim, step, total)
    for o, lr0 in base_lrs:
        for g in o.param_groups:
            g["lr"] = lr0 * f
