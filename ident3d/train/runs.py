"""Loading runs: :func:`load_run` -> :class:`Run` (encoder in eval mode, config, learned
lambdas, the synthetic data-generating process) and the image preprocessing of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ident3d.errors import UsageError
from ident3d.losses import build_loss
from ident3d.models import build_encoder
from ident3d.synthetic import SyntheticDGP, build_dgp
from ident3d.train.rundir import _load_ckpt, read_run_config


@dataclass
class Run:
    """A trained run: ``encoder`` (eval mode), ``config``, ``step``, learned ``lambdas``
    (AnInfoNCE) and ``dgp`` (synthetic runs) on ``device``."""

    encoder: nn.Module
    config: dict[str, Any]
    step: int
    lambdas: np.ndarray | None
    dgp: SyntheticDGP | None
    device: torch.device
    path: Path

    def preprocess(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The training-time input preprocessing of image runs: uint8 ``(N, H, W, 3)`` or
        ``(N, 3, H, W)`` -> float ``(N, 3, H, W)`` in [0, 1] normalised by the dataset's
        mean/std, on the run's device (channels_last when the run used it)."""
        return preprocess_images(x, self.config, self.device)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Encodings of already preprocessed inputs (synthetic observations or images)."""
        outs = [self.encoder(xb.to(self.device)) for xb in torch.split(x, batch_size)]
        return torch.cat(outs).float()


def preprocess_images(
    x: torch.Tensor | np.ndarray, config: dict[str, Any], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """uint8 images -> normalised float tensor exactly as in training (see :class:`Run`)."""
    t = torch.as_tensor(x)
    if t.dim() == 3:
        t = t[None]
    if t.dim() != 4:
        raise UsageError(f"images must be (N, H, W, 3) or (N, 3, H, W), got shape {tuple(t.shape)}")
    if t.shape[-1] == 3 and t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)
    t = t.to(device)
    f = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    d = config["data"]
    if d.get("mean") is not None and d.get("std") is not None:
        mean = torch.tensor(d["mean"], device=f.device).view(1, -1, 1, 1)
        std = torch.tensor(d["std"], device=f.device).view(1, -1, 1, 1)
        f = (f - mean) / std
    if config["model"]["kind"] == "torchvision" and config["loop"].get("channels_last", True):
        f = f.contiguous(memory_format=torch.channels_last)
    return f


def load_run(path_or_checkpoint: str | Path, device: torch.device | str = "cpu") -> Run:
    """Load a run directory (its ``checkpoints/last.pt``) or one checkpoint file of a run."""
    p = Path(path_or_checkpoint)
    if p.is_dir():
        run_dir = p
        ck_path = p / "checkpoints" / "last.pt"
        if not ck_path.is_file():
            raise UsageError(f"{p} has no checkpoints/last.pt (not a finished ident3d run?)")
    elif p.is_file():
        ck_path = p
        run_dir = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    else:
        raise UsageError(f"{p} does not exist")
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise UsageError(f"{cfg_path} is missing: {p} is not inside an ident3d run directory")
    config = read_run_config(cfg_path)
    ck = _load_ckpt(ck_path)
    dev = torch.device(device)
    encoder = build_encoder(config["model"])
    try:
        encoder.load_state_dict(ck["encoder"])
    except RuntimeError:
        raise UsageError(f"{ck_path} does not match the encoder described in {cfg_path}") from None
    encoder = encoder.to(dev).eval()
    lambdas = None
    if config["loss"]["name"] in ("aninfonce", "ensemble"):
        loss_fn = build_loss(config["loss"])
        try:
            loss_fn.load_state_dict(ck["loss"])
        except RuntimeError:
            raise UsageError(f"{ck_path} does not match the loss in {cfg_path}") from None
        lam = loss_fn.lambdas()
        lambdas = None if lam is None else lam.detach().double().numpy()
    dgp = None
    if config["data"]["kind"] == "synthetic":
        dgp = build_dgp(config["data"], dev, ck.get("mixing"))
    return Run(encoder, config, int(ck["step"]), lambdas, dgp, dev, run_dir)
