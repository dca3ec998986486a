"""On-device normalisation: :class:`Normalize` turns uint8 images into standardised floats."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ident3d.errors import UsageError


class Normalize(torch.nn.Module):
    """uint8 images ``(..., 3, H, W)`` -> ``(x / 255 - mean) / std`` in ``dtype``.

    Apply on the device after the transfer (workers ship uint8, a quarter of the bytes of
    float32). Keeps the memory format (channels-last in, channels-last out).
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(np.asarray(mean, np.float64) * 255.0, dtype=torch.float32)
        std_t = torch.as_tensor(np.asarray(std, np.float64) * 255.0, dtype=torch.float32)
        if mean_t.shape != (3,) or std_t.shape != (3,):
            raise UsageError("mean and std need one value per channel (3).")
        if not torch.isfinite(mean_t).all() or not (std_t > 0).all():
            raise UsageError(
                "the dataset's channel statistics are missing or zero: pass mean and std."
            )
        self.dtype = dtype
        self.register_buffer("mean", mean_t.view(3, 1, 1))
        self.register_buffer("scale", (1.0 / std_t).view(3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = (x.to(torch.float32) - self.mean) * self.scale
        return out.to(self.dtype)

    def extra_repr(self) -> str:
        mean = [round(v / 255.0, 4) for v in self.mean.flatten().tolist()]
        std = [round(1.0 / (v * 255.0), 4) for v in self.scale.flatten().tolist()]
        return f"mean={mean}, std={std}, dtype={self.dtype}"
