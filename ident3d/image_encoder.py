"""A small convolutional image encoder (``convnet``) for quick image/text runs on a CPU.

Four stride-2 convolutions (kernel 4, batch norm, ReLU; ``width``, 2, 4, 4 x ``width``
channels), global average pooling, then ``Linear -> LeakyReLU -> Linear`` to the encoding, the
head of the reference harness's image encoder (``resnet18(num_classes=hidden)``, LeakyReLU,
Linear; multimodal-contrastive-learning ``main_imgtxt.py`` lines 213-216). The paper's encoder
is resnet18 (``--encoder resnet18``, the default); this one is about 40x cheaper at 32 px.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ident3d.errors import UsageError


class SmallConvEncoder(nn.Module):
    def __init__(self, n_out: int, hidden: int = 100, width: int = 32) -> None:
        super().__init__()
        if n_out < 1 or hidden < 1 or width < 1:
            raise UsageError("convnet encoder: n_out, hidden and width must be at least 1.")
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        mods: list[nn.Module] = []
        for a, b in itertools.pairwise(chans):
            mods += [nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*mods)
        self.head = nn.Sequential(
            nn.Linear(chans[-1], hidden), nn.LeakyReLU(), nn.Linear(hidden, n_out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))
