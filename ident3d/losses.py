"""Contrastive losses: InfoNCE (Lp, dot, cosine / NT-Xent), AnInfoNCE, hard negatives, ensembles.

Every loss takes the encodings of the two views, ``h1`` and ``h2`` (``(B, n)``; row ``i`` of
both is a positive pair) and returns the mean loss over its anchors. Negatives come from the
batch:

- ``negatives="both"`` (SimCLR / NT-Xent form, the default): the anchor ``h1[i]`` is contrasted
  with all ``2B - 2`` other encodings of both views except itself and its positive, so
  ``M = 2B - 2`` negatives; identical-sample pairs (an encoding with itself) are masked out.
- ``negatives="cross"``: only the other view, ``M = B - 1`` negatives.

``symmetric=True`` (default) uses both views as anchors and averages. Logits are
``similarity / temperature``; the loss of one anchor is
``-log(exp(s+) / (exp(s+) + sum_j exp(s_j)))`` (cross-entropy over the candidates).

Hard-negative mining (``hard_negative_beta = beta > 0``, Robinson et al. 2021) replaces the sum
over negatives by ``M * sum_j w_j exp(s_j)`` with importance weights
``w_j = softmax_j(beta * s_j)``: negatives that look like the anchor count more; ``beta = 0`` is
plain InfoNCE.

Every loss reports ``n_negatives(B)`` so the harness can log the mutual-information lower bound
``log(M + 1) - L`` next to the loss (see :func:`mi_lower_bound`).

A batch split over several processes (``ident3d.train.distributed``) passes
``candidates=Candidates(c1, c2, offset)``: ``c1``, ``c2`` hold the encodings of all ``B``
pairs of the global batch (every rank's, in rank order) and ``h1``, ``h2`` are this rank's rows
``offset, offset + 1, ...`` of them. The anchors are then this rank's rows and the negatives
come from the whole global batch (``M = 2B - 2`` or ``B - 1`` as above), and a loss returns
this rank's *share*: the sum of its anchors' losses divided by the number of anchors of the
global batch, so the shares of all ranks add up to the loss of the whole batch on one process.
Without ``candidates`` the share is the whole loss.
"""

from __future__ import annotations

import abc
import math
from typing import Any, NamedTuple

import torch
from torch import nn

from ident3d.errors import UsageError

SIMILARITIES = ("lp", "dot", "cosine")
NEGATIVES = ("both", "cross")
LOSSES = ("infonce", "aninfonce", "ensemble")


def mi_lower_bound(loss: float, n_negatives: int) -> float:
    """The InfoNCE mutual-information lower bound ``log(M + 1) - L`` for ``M`` negatives."""
    return math.log(n_negatives + 1) - loss


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``||a_i - b_j||^2`` for all pairs through one matmul (clamped at 0)."""
    d = (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2.0 * (a @ b.T)
    return d.clamp_min(0.0)


def pairwise_similarity(
    a: torch.Tensor, b: torch.Tensor, kind: str, p: float = 2.0
) -> torch.Tensor:
    """The ``(len(a), len(b))`` similarity matrix: ``-||a - b||_p^p`` (``lp``), ``a . b``
    (``dot``) or the cosine of the angle (``cosine``)."""
    if kind == "lp":
        if p == 2:
            return -squared_distances(a, b)
        return -torch.cdist(a, b, p=p).pow(p)
    if kind == "dot":
        return a @ b.T
    if kind == "cosine":
        a = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        b = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return a @ b.T
    raise UsageError(f"unknown similarity {kind!r}; choose one of {', '.join(SIMILARITIES)}")


class Candidates(NamedTuple):
    """The global batch of a batch split over ranks: ``c1``, ``c2`` are the ``(B, n)``
    encodings of both views of all ranks' pairs (rank order); the anchors handed to a loss
    are rows ``offset, offset + 1, ...`` of them."""

    c1: torch.Tensor
    c2: torch.Tensor
    offset: int


def _anchor_loss(
    logits: torch.Tensor, pos: torch.Tensor, beta: float, n_anchors: int
) -> torch.Tensor:
    """Sum over rows of the InfoNCE loss divided by ``n_anchors`` (the anchors of the whole
    batch); ``logits`` rows hold the candidates (masked ones are ``-inf``), ``pos`` the column
    of each row's positive. Invariant to adding a constant to a row, which lets callers drop
    row-constant terms of the similarity."""
    if beta == 0.0:
        return nn.functional.cross_entropy(logits, pos, reduction="sum") / n_anchors
    rows = torch.arange(logits.shape[0], device=logits.device)
    s_pos = logits[rows, pos]
    neg = logits.clone()
    neg[rows, pos] = -math.inf
    m = torch.isfinite(neg).sum(dim=1).to(logits.dtype)
    neg_term = (
        torch.log(m) + torch.logsumexp((1.0 + beta) * neg, 1) - torch.logsumexp(beta * neg, 1)
    )
    return (torch.logsumexp(torch.stack([s_pos, neg_term], 1), 1) - s_pos).sum() / n_anchors


def contrastive_loss(
    h1: torch.Tensor,
    h2: torch.Tensor,
    sim: Any,
    negatives: str = "both",
    symmetric: bool = True,
    beta: float = 0.0,
    candidates: Candidates | None = None,
) -> torch.Tensor:
    """InfoNCE for a pairwise similarity function ``sim(a, b) -> (len(a), len(b))`` (already
    divided by any temperature; it may omit terms that are constant along a row, i.e. depend
    on ``a`` only). See the module docstring for the options; with ``candidates`` the
    anchors ``h1``, ``h2`` are contrasted with the global batch and the result is this rank's
    share of its loss."""
    b = h1.shape[0]
    dev = h1.device
    if candidates is None:
        c1, c2, off = h1, h2, 0
    else:
        c1, c2, off = candidates
    n = c1.shape[0]
    idx = torch.arange(b, device=dev) + off
    rows = torch.arange(2 * b if symmetric else b, device=dev)
    if negatives == "both":
        c = torch.cat([c1, c2])
        anchors = torch.cat([h1, h2]) if symmetric else h1
        if candidates is None and symmetric:
            anchors = c
        # rows: the anchors; the anchor itself among the candidates is masked out in place
        s = sim(anchors, c)
        if symmetric:
            s[rows, torch.cat([idx, idx + n])] = -math.inf
            return _anchor_loss(s, torch.cat([idx + n, idx]), beta, 2 * n)
        s[rows, idx] = -math.inf
        return _anchor_loss(s, idx + n, beta, n)
    if negatives == "cross":
        loss = _anchor_loss(sim(h1, c2), idx, beta, n)
        if symmetric:
            loss = 0.5 * (loss + _anchor_loss(sim(h2, c1), idx, beta, n))
        return loss
    raise UsageError(f"unknown negatives mode {negatives!r}; choose one of {', '.join(NEGATIVES)}")


def row_shifted_sq_distances(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``-scale ||a_i - b_j||^2`` up to the row constant ``-scale ||a_i||^2``, i.e.
    ``scale (2 a_i . b_j - ||b_j||^2)``, in one fused matmul (InfoNCE is invariant to row
    constants)."""
    return torch.addmm((b * b).sum(-1).mul(-scale)[None, :], a, b.T, alpha=2.0 * scale)


def _check_common(negatives: str, beta: float) -> None:
    if negatives not in NEGATIVES:
        raise UsageError(
            f"unknown negatives mode {negatives!r}; choose one of {', '.join(NEGATIVES)}"
        )
    if beta < 0:
        raise UsageError(f"the hard-negative concentration beta must be >= 0, got {beta}")


def _float(candidates: Candidates | None) -> Candidates | None:
    if candidates is None:
        return None
    return Candidates(candidates.c1.float(), candidates.c2.float(), int(candidates.offset))


class ContrastiveLoss(nn.Module, abc.ABC):
    """Base class: ``forward(h1, h2, candidates=None) -> scalar``, ``n_negatives(B)``,
    ``spec()``."""

    negatives: str = "both"

    def n_negatives(self, batch: int) -> int:
        """Negatives per anchor for a batch of ``batch`` pairs (the global batch when it is
        split over ranks: every anchor sees all of it)."""
        return 2 * batch - 2 if self.negatives == "both" else batch - 1

    def lambdas(self) -> torch.Tensor | None:
        return None

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """The JSON-ready spec that :func:`build_loss` turns back into this loss."""


class InfoNCE(ContrastiveLoss):
    """InfoNCE with similarity ``lp`` (``-||a - b||_p^p``, p = 1, 2, 3, ...), ``dot`` or
    ``cosine`` (with ``negatives='both'`` and ``symmetric=True``: SimCLR's NT-Xent), divided
    by ``temperature``."""

    def __init__(
        self,
        similarity: str = "lp",
        p: float = 2.0,
        temperature: float = 1.0,
        negatives: str = "both",
        symmetric: bool = True,
        hard_negative_beta: float = 0.0,
    ) -> None:
        super().__init__()
        if similarity not in SIMILARITIES:
            raise UsageError(
                f"unknown similarity {similarity!r}; choose one of {', '.join(SIMILARITIES)}"
            )
        if temperature <= 0:
            raise UsageError(f"temperature must be positive, got {temperature}")
        if similarity == "lp" and p <= 0:
            raise UsageError(f"p must be positive, got {p}")
        _check_common(negatives, hard_negative_beta)
        self.similarity, self.p, self.temperature = similarity, float(p), float(temperature)
        self.negatives, self.symmetric = negatives, bool(symmetric)
        self.beta = float(hard_negative_beta)

    def sim(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return pairwise_similarity(a, b, self.similarity, self.p) / self.temperature

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``sim(a, b)`` up to row constants, computed in as few passes as possible."""
        if self.similarity == "lp" and self.p == 2:
            return row_shifted_sq_distances(a, b, 1.0 / self.temperature)
        if self.similarity == "dot":
            return (a / self.temperature) @ b.T
        return self.sim(a, b)

    def forward(
        self, h1: torch.Tensor, h2: torch.Tensor, candidates: Candidates | None = None
    ) -> torch.Tensor:
        return contrastive_loss(
            h1.float(), h2.float(), self.logits, self.negatives, self.symmetric, self.beta,
            _float(candidates),
        )  # fmt: skip

    def spec(self) -> dict[str, Any]:
        return {
            "name": "infonce",
            "similarity": self.similarity,
            "p": self.p,
            "temperature": self.temperature,
            "negatives": self.negatives,
            "symmetric": self.symmetric,
            "hard_negative_beta": self.beta,
        }


class AnInfoNCE(ContrastiveLoss):
    """Anisotropic InfoNCE: similarity ``-1/2 (a - b)^T diag(lambda) (a - b)`` with
    ``lambda = softplus(theta)`` learned (its own optimiser, see the harness); no temperature.
    ``theta`` starts at ``theta_init_std * randn(n)`` drawn from ``generator``."""

    def __init__(
        self,
        n: int,
        theta_init_std: float = 0.1,
        negatives: str = "both",
        symmetric: bool = True,
        hard_negative_beta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        _check_common(negatives, hard_negative_beta)
        if n < 1:
            raise UsageError(f"AnInfoNCE needs a positive latent dimension, got {n}")
        self.n, self.theta_init_std = int(n), float(theta_init_std)
        self.negatives, self.symmetric = negatives, bool(symmetric)
        self.beta = float(hard_negative_beta)
        self.theta = nn.Parameter(theta_init_std * torch.randn(n, generator=generator))

    def lambdas(self) -> torch.Tensor:
        return nn.functional.softplus(self.theta)

    def sim(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        w = self.lambdas().sqrt()
        return -0.5 * squared_distances(a * w, b * w)

    def logits(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``sim(a, b)`` up to row constants: ``a Lambda b^T - 1/2 b Lambda b^T`` (one addmm)."""
        lam = self.lambdas()
        bl = b * lam
        return torch.addmm((bl * b).sum(-1).mul(-0.5)[None, :], a, bl.T)

    def forward(
        self, h1: torch.Tensor, h2: torch.Tensor, candidates: Candidates | None = None
    ) -> torch.Tensor:
        return contrastive_loss(
            h1.float(), h2.float(), self.logits, self.negatives, self.symmetric, self.beta,
            _float(candidates),
        )  # fmt: skip

    def spec(self) -> dict[str, Any]:
        return {
            "name": "aninfonce",
            "n": self.n,
            "theta_init_std": self.theta_init_std,
            "negatives": self.negatives,
            "symmetric": self.symmetric,
            "hard_negative_beta": self.beta,
        }


class EnsembleLoss(ContrastiveLoss):
    """A weighted sum ``sum_k w_k L_k`` of several losses on the same pair of views. Its
    ``n_negatives`` is the members' smallest, and the harness reports the MI bound of the
    weight-normalised loss ``sum_k w_k L_k / sum_k w_k``."""

    def __init__(self, members: list[ContrastiveLoss], weights: list[float]) -> None:
        super().__init__()
        if not members or len(members) != len(weights):
            raise UsageError("a loss ensemble needs one weight per member and at least one member")
        if min(weights) < 0 or sum(weights) <= 0:
            raise UsageError(f"ensemble weights must be >= 0 with a positive sum, got {weights}")
        self.members = nn.ModuleList(members)
        self.weights = [float(w) for w in weights]

    def n_negatives(self, batch: int) -> int:
        return min(m.n_negatives(batch) for m in self.members)

    def lambdas(self) -> torch.Tensor | None:
        for m in self.members:
            lam = m.lambdas()
            if lam is not None:
                return lam
        return None

    def forward(
        self, h1: torch.Tensor, h2: torch.Tensor, candidates: Candidates | None = None
    ) -> torch.Tensor:
        total = h1.new_zeros((), dtype=torch.float32)
        for w, m in zip(self.weights, self.members, strict=True):
            total = total + w * m(h1, h2, candidates)
        return total

    def normalised(self, loss: float) -> float:
        return loss / sum(self.weights)

    def spec(self) -> dict[str, Any]:
        return {
            "name": "ensemble",
            "members": [
                {"weight": w, "loss": m.spec()}
                for w, m in zip(self.weights, self.members, strict=True)
            ],
        }


def build_loss(spec: dict[str, Any], generator: torch.Generator | None = None) -> ContrastiveLoss:
    """Build a loss from its JSON-ready spec (as stored in a run's ``config.json``)."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if name == "infonce":
        spec.pop("lambda_lr", None)
        return InfoNCE(**_only(spec, InfoNCE))
    if name == "aninfonce":
        spec.pop("lambda_lr", None)
        return AnInfoNCE(generator=generator, **_only(spec, AnInfoNCE))
    if name == "ensemble":
        members = spec.get("members") or []
        return EnsembleLoss(
            [build_loss(m["loss"], generator) for m in members],
            [float(m.get("weight", 1.0)) for m in members],
        )
    raise UsageError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


def _only(spec: dict[str, Any], cls: type) -> dict[str, Any]:
    import inspect

    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "generator"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise UsageError(f"unknown option(s) for loss {cls.__name__}: {', '.join(unknown)}")
    return spec
