"""Text encoders for image/text contrastive learning, chosen by name (:data:`TEXT_ENCODERS`).

``conv1d``: token embeddings (``nn.Embedding``, ``{pad}`` = id 0 embedded as zeros), three 1-D
convolutions over the sequence (kernel 3, batch norm, ReLU), max-pooling over the positions and a
linear layer to the encoding. The reference harness (multimodal-contrastive-learning
``encoders.py`` lines 56-88, ``TextEncoder2D``) embeds one-hot rows with a linear layer (the same
as an embedding) and runs *2-D* convolutions over the (sequence x embedding) plane, which fixes
the sequence length to 24-31 tokens; this one takes any length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ident3d.errors import UsageError


class TextConvEncoder(nn.Module):
    """Embedding + 1-D convolutions + max-pool + linear (see the module docstring)."""

    def __init__(
        self,
        vocab_size: int,
        n_out: int,
        embedding_dim: int = 128,
        channels: int = 128,
        layers: int = 3,
        kernel: int = 3,
    ) -> None:
        super().__init__()
        if vocab_size < 4 or n_out < 1 or layers < 1 or kernel < 1:
            raise UsageError("text encoder: vocab_size >= 4, n_out, layers, kernel >= 1 needed.")
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        mods: list[nn.Module] = []
        c_in = embedding_dim
        for _ in range(layers):
            mods += [
                nn.Conv1d(c_in, channels, kernel, padding=kernel // 2),
                nn.BatchNorm1d(channels),
                nn.ReLU(inplace=True),
            ]
            c_in = channels
        self.convs = nn.Sequential(*mods)
        self.head = nn.Linear(channels, n_out)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(ids.long()).transpose(1, 2)  # (B, E, L)
        return self.head(self.convs(x).amax(dim=-1))


TEXT_ENCODERS = {"conv1d": TextConvEncoder}


def build_text_encoder(spec: dict[str, Any]) -> nn.Module:
    """A text encoder from ``{"name": ..., "vocab_size": ..., "n_out": ..., **options}``."""
    name = spec.get("name")
    if name not in TEXT_ENCODERS:
        raise UsageError(
            f"unknown text encoder {name!r}; choose one of {', '.join(TEXT_ENCODERS)}."
        )
    kw = {k: int(v) for k, v in spec.items() if k != "name"}
    return TEXT_ENCODERS[name](**kw)
