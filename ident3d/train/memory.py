"""Size checks before a run writes anything: :func:`check_sizes` estimates the memory one
step (and one evaluation) needs and refuses sizes that cannot fit, so that a batch of 10**9
is one line and exit status 2 rather than a traceback and a half-made run directory."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from ident3d.errors import UsageError
from ident3d.resources import available_memory

_GIB = 2**30
#: Copies of the 2B x 2B similarity matrix alive in one step (logits, their softmax in the
#: fused cross-entropy, the gradient).
_SIM_COPIES = 3
#: Copies of each activation (forward value, LeakyReLU output, gradient).
_ACT_COPIES = 3
#: Copies of each parameter (value, gradient, Adam's two moments).
_PARAM_COPIES = 4


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free memory, or the host's ``MemAvailable``
    (``None`` when it cannot be read: then nothing is refused)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    return available_memory()


def step_bytes(cfg: dict[str, Any], world: int = 1) -> dict[str, int]:
    """A lower estimate of the memory of one training step and one evaluation, by part:
    ``similarity`` (the (2B)^2 float32 logits), ``activations`` (MLP encoders), ``parameters``
    (MLP encoders, with gradients and Adam's moments) and ``eval`` (synthetic evaluation
    samples through the MLP)."""
    batch = max(1, int(cfg["batch_size"]))
    b = -(-batch // max(1, world))  # the largest rank's rows
    # each rank's anchors (2b rows) against the whole global batch (2B columns)
    parts = {"similarity": _SIM_COPIES * 4 * (2 * b) * (2 * batch)}
    m = cfg["model"]
    if m.get("kind") == "mlp":
        widths = [int(m["n_in"]), *[int(w) for w in m["hidden"]], int(m["n_out"])]
        parts["activations"] = _ACT_COPIES * 4 * 2 * b * sum(widths)
        weights = sum(a * c for a, c in itertools.pairwise(widths))
        parts["parameters"] = _PARAM_COPIES * 4 * weights
        if cfg["data"]["kind"] == "synthetic":
            parts["eval"] = 4 * int(cfg["loop"]["eval_samples"]) * (sum(widths) + 2 * widths[0])
    return parts


def check_sizes(cfg: dict[str, Any], device: torch.device, world: int = 1) -> None:
    """Refuse a config whose step cannot fit in ``device``'s free memory (one line naming
    the option to lower); nothing has been written when it does."""
    free = available_bytes(device)
    if free is None:
        return
    parts = step_bytes(cfg, world)
    need = sum(parts.values())
    if need <= free:
        return
    biggest = max(parts, key=lambda k: parts[k])
    option = {
        "similarity": f"--batch-size {cfg['batch_size']}",
        "activations": f"--batch-size {cfg['batch_size']} with --hidden/--n",
        "parameters": "--hidden/--n (the encoder's widths)",
        "eval": f"--eval-samples {cfg['loop']['eval_samples']}",
    }[biggest]
    raise UsageError(
        f"{option} needs at least {need / _GIB:.3g} GiB per step ({biggest} "
        f"{parts[biggest] / _GIB:.3g} GiB) but {device} has {free / _GIB:.3g} GiB free; "
        "lower it"
    )
