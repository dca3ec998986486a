"""How images reach an external encoder: :class:`Preprocess` (``--resize``, ``--normalize``)
turns the loaders' uint8 ``(N, 3, H, W)`` batches into the float inputs such models expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ident3d.errors import UsageError

#: torchvision's ImageNet statistics (``transforms.Normalize`` of its pretrained weights).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZE_CHOICES = ("dataset", "imagenet", "none")


def parse_resize(value: str | int | Sequence[int] | None) -> tuple[int, int] | None:
    """``--resize``: ``N`` (N x N), ``HxW`` or ``(H, W)``; None keeps the dataset's size."""
    if value is None:
        return None
    if isinstance(value, int):
        size = (value, value)
    elif isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise UsageError(
                f"--resize must be N or HxW (e.g. 224 or 224x224), got {value!r}"
            ) from None
        if len(nums) == 1:
            size = (nums[0], nums[0])
        elif len(nums) == 2:
            size = (nums[0], nums[1])
        else:
            raise UsageError(f"--resize must be N or HxW (e.g. 224 or 224x224), got {value!r}")
    else:
        size = tuple(int(v) for v in value)  # type: ignore[assignment]
        if len(size) != 2:
            raise UsageError(f"--resize needs (H, W), got {value!r}")
    if min(size) < 1:
        raise UsageError(f"--resize must be positive, got {value!r}")
    return size


@dataclass(frozen=True)
class Preprocess:
    """uint8 ``(N, 3, H, W)`` on the device -> float32 in [0, 1], resized (bilinear with
    antialiasing, as torchvision's ``Resize`` on tensors) to ``resize`` when given, then
    normalised per channel by ``(x - mean) / std`` (``normalize``: the dataset's statistics,
    ImageNet's, or none)."""

    normalize: str = "dataset"
    resize: tuple[int, int] | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channels_last: bool = False

    @classmethod
    def build(
        cls,
        normalize: str = "dataset",
        resize: str | int | Sequence[int] | None = None,
        dataset_stats: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> Preprocess:
        if normalize not in NORMALIZE_CHOICES:
            raise UsageError(
                f"--normalize must be one of {', '.join(NORMALIZE_CHOICES)}, got {normalize!r}"
            )
        mean = std = None
        if normalize == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif normalize == "dataset":
            if dataset_stats is None:
                raise UsageError("--normalize dataset needs the dataset's channel statistics")
            mean = tuple(float(v) for v in dataset_stats[0])
            std = tuple(float(v) for v in dataset_stats[1])
            if len(mean) != 3 or len(std) != 3 or not all(s > 0 for s in std):
                raise UsageError(
                    "the dataset's channel statistics are missing or zero: use --normalize "
                    "imagenet or none"
                )
        return cls(normalize, parse_resize(resize), mean, std)  # type: ignore[arg-type]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise UsageError(f"images must be (N, 3, H, W), got shape {tuple(x.shape)}")
        f = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.resize is not None and tuple(f.shape[-2:]) != self.resize:
            f = torch.nn.functional.interpolate(
                f, size=self.resize, mode="bilinear", align_corners=False, antialias=True
            )
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, device=f.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=f.device).view(1, 3, 1, 1)
            f = (f - mean) / std
        return f.contiguous()

    def to_dict(self) -> dict[str, Any]:
        """What the report records under ``preprocessing``."""
        return {
            "scale": "uint8 / 255 -> [0, 1]",
            "resize": list(self.resize) if self.resize else None,
            "interpolation": "bilinear, antialias" if self.resize else None,
            "normalize": self.normalize,
            "mean": list(self.mean) if self.mean else None,
            "std": list(self.std) if self.std else None,
            "layout": "float32 (N, 3, H, W), RGB",
        }
