"""One training step of the harness per loss, on the global batch: run it under
``torchrun --standalone --nproc-per-node K`` (gloo on the CPU) or with plain ``python`` (one
process). Usage: ``ddp_step_script.py OUT BATCH [BATCH ...]``; writes the step's logged loss
and the gradients every rank holds after the step (the encoder's after DDP's all-reduce, the
loss's own after the harness's average) to ``OUT/<batch>-<name>-rank<r>.pt``.

Both runs draw the same global batch (every rank draws it from the same seeded stream and
keeps its rows), so the files of K ranks must equal the one-process files to float tolerance.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from ident3d.train.config import resolve_config
from ident3d.train.device import _close_distributed
from ident3d.train.loop import _train_step
from ident3d.train.setup import _set_up, _wrap

LOSSES = {
    "infonce-l2-both": {"name": "infonce", "similarity": "lp", "p": 2.0},
    "infonce-dot-cross": {"name": "infonce", "similarity": "dot", "temperature": 0.5,
                          "negatives": "cross", "symmetric": False},
    "infonce-cosine-hard": {"name": "infonce", "similarity": "cosine", "temperature": 0.3,
                            "hard_negative_beta": 1.0},
    "aninfonce": {"name": "aninfonce", "n": 3},
    "aninfonce-cross-hard": {"name": "aninfonce", "n": 3, "negatives": "cross",
                             "hard_negative_beta": 0.5},
    "ensemble": {"name": "ensemble", "members": [
        {"weight": 0.5, "loss": {"name": "infonce", "similarity": "lp", "p": 1.0}},
        {"weight": 1.0, "loss": {"name": "aninfonce", "n": 3}}]},
}  # fmt: skip


def main(out: Path, batches: list[int]) -> None:
    for batch in batches:
        for name, loss in LOSSES.items():
            cfg = resolve_config(
                {
                    "seed": 5,
                    "steps": 1,
                    "batch_size": batch,
                    "data": {"kind": "synthetic", "n": 3, "cond_draws": 50},
                    "model": {"hidden": [16, 16]},
                    "loss": loss,
                    "loop": {"device": "cpu", "threads": 1, "eval_samples": 16},
                }
            )
            t = _set_up(cfg, None)
            _wrap(t)
            value = _train_step(t, 1)
            grads = {
                "loss": value.detach().clone(),
                "encoder": {n: p.grad.clone() for n, p in t.encoder.named_parameters()},
                "loss_params": {
                    n: p.grad.clone() for n, p in t.loss_fn.named_parameters() if p.grad is not None
                },
            }
            torch.save(grads, out / f"{batch}-{name}-rank{t.dist.rank}.pt")
    _close_distributed()  # leave the group cleanly: no rank aborts at exit


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(b) for b in sys.argv[2:]])
    # skip C++ static destructors: gloo's threads can abort the process at interpreter exit
    # ("terminate called without an active exception") after everything is written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
