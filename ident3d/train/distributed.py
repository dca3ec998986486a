"""The loss of the global batch across processes: every rank's encodings are gathered with
gradients (:func:`all_gather_with_grad`), so an anchor is contrasted with the negatives of the
whole global batch, and :func:`global_batch_loss` scales each rank's share of the loss so that
the parameter gradients after DistributedDataParallel's all-reduce (an *average* over ranks)
equal those of one process on the concatenated batch.

How the global batch of ``B`` pairs is split: rank ``r`` of ``K`` holds rows
``r B // K`` to ``(r + 1) B // K`` (:func:`rank_rows`; sizes differ by at most one when ``K``
does not divide ``B``), in rank order, so the concatenation of the ranks' batches is the batch
one process would draw. The data sources keep it that way for any ``K``, which is what lets a
run resume on another number of ranks.

The scaling. Rank ``r``'s share ``S_r`` is the sum of its anchors' losses over the number of
anchors of the global batch, so ``L = sum_r S_r`` is the single-process loss. The backward of
the gather sums the gradients that reach each rank's rows from every rank's share and returns
the rank's own rows, so backpropagating ``K S_r`` on every rank gives rank ``r``'s encoder
parameters ``K dL/dh_r dh_r/dtheta``; DDP's average over ranks of these is exactly
``dL/dtheta``. The loss's own parameters (AnInfoNCE's ``theta``, not wrapped by DDP) get
``K dS_r/dtheta`` on rank ``r``, and their average over ranks is ``dL/dtheta`` too.
"""

from __future__ import annotations

from typing import Any

import torch

from ident3d.errors import UsageError
from ident3d.losses import Candidates, ContrastiveLoss


def rank_rows(batch: int, rank: int, world: int) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of a global batch of ``batch`` pairs that rank ``rank`` of
    ``world`` holds."""
    return batch * rank // world, batch * (rank + 1) // world


def check_split(batch: int, world: int) -> None:
    """Refuse a global batch that leaves a rank without a pair."""
    if world > 1 and batch < world:
        raise UsageError(
            f"--batch-size {batch} is smaller than the number of processes ({world}): "
            "every process needs at least one pair of the global batch"
        )


class _AllGather(torch.autograd.Function):
    """All-gather of the rows of every rank (``sizes[r]`` rows on rank ``r``) into one
    ``(sum(sizes), ...)`` tensor. Backward: the incoming gradient (made contiguous: the
    gathered tensor is often used through non-contiguous views, where
    ``torch.distributed.nn``'s all-gather lost gradients, pytorch#120386) is summed over the
    ranks and this rank's rows are returned."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, sizes: list[int], rank: int, group: Any) -> torch.Tensor:
        import torch.distributed as dist

        width = max(sizes)
        x = x.contiguous()
        if x.shape[0] < width:  # uneven split: pad to a common shape, cut after gathering
            x = torch.cat([x, x.new_zeros((width - x.shape[0], *x.shape[1:]))])
        parts = [torch.empty_like(x) for _ in sizes]
        dist.all_gather(parts, x, group=group)
        ctx.rows = (sum(sizes[:rank]), sum(sizes[: rank + 1]))
        ctx.group = group
        return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        import torch.distributed as dist

        g = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        lo, hi = ctx.rows
        return g[lo:hi], None, None, None


def all_gather_with_grad(
    x: torch.Tensor, sizes: list[int] | None = None, group: Any = None
) -> torch.Tensor:
    """Every rank's ``x`` concatenated in rank order (rank ``r`` contributes ``sizes[r]``
    rows; default: all the same size), differentiable: the gradient of a rank's rows is the
    sum over all ranks of the gradient that reaches them."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    rank = dist.get_rank(group)
    if sizes is None:
        sizes = [int(x.shape[0])] * world
    if len(sizes) != world or sizes[rank] != x.shape[0]:
        raise ValueError(f"rank {rank} holds {x.shape[0]} rows, but the split is {sizes}")
    return _AllGather.apply(x, [int(s) for s in sizes], rank, group)


def global_batch_loss(
    loss_fn: ContrastiveLoss, h1: torch.Tensor, h2: torch.Tensor, batch: int, world: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(to_backward, loss)`` for this rank's encodings ``h1``, ``h2`` (its rows of a global
    batch of ``batch`` pairs split over ``world`` ranks, :func:`rank_rows`): ``loss`` is the
    single-process loss of the whole global batch (the same on every rank, detached), and
    ``to_backward`` is ``world`` times this rank's share of it (see the module docstring).
    One process: both are the loss itself."""
    if world <= 1:
        loss = loss_fn(h1, h2)
        return loss, loss
    import torch.distributed as dist

    rank = dist.get_rank()
    sizes = [hi - lo for lo, hi in (rank_rows(batch, r, world) for r in range(world))]
    n = h1.shape[1]
    # both views in one collective: (b, 2n) per rank -> (B, 2n), split back by columns
    g = all_gather_with_grad(torch.cat([h1, h2], 1), sizes)
    share = loss_fn(h1, h2, Candidates(g[:, :n], g[:, n:], sum(sizes[:rank])))
    total = share.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return share * world, total


def average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """Average the gradients of ``params`` over the ranks in place, as DDP does for the
    parameters it wraps (for the loss's own parameters, which it does not)."""
    if world <= 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def sync_batchnorm(encoder: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """The encoder whose batch-norm layers normalise with the statistics of the global batch
    (``torch.nn.SyncBatchNorm``), as one process on the whole batch does, when it runs on
    several CUDA ranks; otherwise ``encoder`` itself. The parameters stay the same objects (an
    optimiser built on them keeps working) and so do the state-dict keys (checkpoints load
    into the plain encoder). PyTorch's SyncBatchNorm runs on CUDA only: on CPU ranks (gloo)
    batch-norm layers keep per-rank statistics."""
    if world <= 1 or device.type != "cuda":
        return encoder
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in encoder.modules()):
        return encoder
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(encoder)
