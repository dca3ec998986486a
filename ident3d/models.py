"""Encoders: the papers' ResNet18 (and any torchvision backbone) and the synthetic MLP.

Every encoder is built from a JSON-ready *model spec* (stored in a run's ``config.json``) by
:func:`build_encoder`, so a run can be rebuilt exactly from its config:

- ``{"kind": "mlp", "n_in": 10, "n_out": 10, "hidden": [100, 500, 500, 500, 500, 100]}``:
  the encoder of the synthetic experiments (widths ``[10n, 50n, 50n, 50n, 50n, 10n]``,
  LeakyReLU between layers).
- ``{"kind": "torchvision", "backbone": "resnet18", "n_out": 10, "head_features": 100}``:
  a torchvision classification model built from scratch (no pretrained weights) whose
  classifier outputs ``head_features`` (= 10n), then LeakyReLU, then a Linear layer to ``n``.

Both take an output ``constraint``: ``none``; ``box`` (``bound * (2 sigmoid(h) - 1)``, i.e. a
sigmoid scaled to ``[-bound, bound]``); ``sphere`` (``radius * h / |h|``, the radius fixed or
learned with ``learn_radius``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ident3d.errors import UsageError

CONSTRAINTS = ("none", "box", "sphere")


def mlp_widths(n: int) -> list[int]:
    """The hidden widths of the papers' synthetic encoder: [10n, 50n, 50n, 50n, 50n, 10n]."""
    return [10 * n, 50 * n, 50 * n, 50 * n, 50 * n, 10 * n]


class OutputConstraint(nn.Module):
    """Maps raw encoder outputs into the constraint set (none, box or sphere)."""

    def __init__(
        self,
        kind: str = "none",
        bound: float = 1.0,
        radius: float = 1.0,
        learn_radius: bool = False,
    ) -> None:
        super().__init__()
        if kind not in CONSTRAINTS:
            raise UsageError(
                f"unknown output constraint {kind!r}; choose one of {', '.join(CONSTRAINTS)}"
            )
        self.kind, self.bound = kind, float(bound)
        if kind == "sphere":
            r = torch.tensor(float(radius))
            if learn_radius:
                self.radius = nn.Parameter(r)
            else:
                self.register_buffer("radius", r)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "box":
            return self.bound * (2.0 * torch.sigmoid(h) - 1.0)
        if self.kind == "sphere":
            h = h.float()
            return self.radius * h / h.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return h


class MLPEncoder(nn.Module):
    """Linear layers of the given widths with LeakyReLU between them, then a constraint."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        hidden: list[int],
        slope: float = 0.01,
        constraint: OutputConstraint | None = None,
    ) -> None:
        super().__init__()
        widths = [n_in, *hidden, n_out]
        layers: list[nn.Module] = []
        for i in range(len(widths) - 1):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < len(widths) - 2:
                layers.append(nn.LeakyReLU(slope))
        self.net = nn.Sequential(*layers)
        self.constraint = constraint or OutputConstraint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.constraint(self.net(x))


class BackboneEncoder(nn.Module):
    """A torchvision backbone (from scratch) with ``head_features`` outputs, LeakyReLU and a
    Linear layer to ``n_out``, then a constraint."""

    def __init__(
        self,
        backbone: str,
        n_out: int,
        head_features: int,
        constraint: OutputConstraint | None = None,
    ) -> None:
        super().__init__()
        import torchvision

        names = set(torchvision.models.list_models(module=torchvision.models))
        if backbone not in names:
            raise UsageError(
                f"unknown encoder backbone {backbone!r}: torchvision has no classification model "
                "of that name (e.g. resnet18, resnet50, efficientnet_b0)"
            )
        self.backbone = torchvision.models.get_model(
            backbone, weights=None, num_classes=head_features
        )
        self.head = nn.Sequential(nn.LeakyReLU(), nn.Linear(head_features, n_out))
        self.constraint = constraint or OutputConstraint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.constraint(self.head(self.backbone(x)))


def default_model_spec(kind: str, n: int, n_in: int | None = None) -> dict[str, Any]:
    """The papers' encoder for ``kind`` ``mlp`` (synthetic) or ``torchvision`` (images)."""
    if kind == "mlp":
        return {
            "kind": "mlp",
            "n_in": n_in or n,
            "n_out": n,
            "hidden": mlp_widths(n),
            "slope": 0.01,
            "constraint": "none",
            "bound": 1.0,
            "radius": 1.0,
            "learn_radius": False,
        }
    return {
        "kind": "torchvision",
        "backbone": "resnet18",
        "n_out": n,
        "head_features": 10 * n,
        "constraint": "none",
        "bound": 1.0,
        "radius": 1.0,
        "learn_radius": False,
    }


def build_encoder(spec: dict[str, Any]) -> nn.Module:
    """Build an encoder from a model spec (see the module docstring)."""
    constraint = OutputConstraint(
        spec.get("constraint", "none"),
        spec.get("bound", 1.0),
        spec.get("radius", 1.0),
        bool(spec.get("learn_radius", False)),
    )
    kind = spec.get("kind")
    if kind == "mlp":
        return MLPEncoder(
            int(spec["n_in"]),
            int(spec["n_out"]),
            [int(w) for w in spec["hidden"]],
            float(spec.get("slope", 0.01)),
            constraint,
        )
    if kind == "torchvision":
        return BackboneEncoder(
            str(spec["backbone"]), int(spec["n_out"]), int(spec["head_features"]), constraint
        )
    raise UsageError(f"unknown encoder kind {kind!r}; choose mlp or torchvision")
