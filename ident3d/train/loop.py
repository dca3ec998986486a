"""The training loop: :func:`train` runs the named steps (open the run directory, set up,
restore, then the step loop with logging, evaluation and checkpoints)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ident3d.losses import EnsembleLoss
from ident3d.train.device import _close_distributed, pick_device
from ident3d.train.distributed import average_gradients, global_batch_loss
from ident3d.train.memory import check_sizes
from ident3d.train.metrics_log import _MetricsLog, _StepLog
from ident3d.train.rundir import _open_run_dir, _save_checkpoint, _write_config, write_error
from ident3d.train.schedule import _apply_lr
from ident3d.train.scores import score
from ident3d.train.setup import _restore, _set_up, _Trainer, _wrap


def train(
    config: dict[str, Any],
    out: str | Path,
    resume: bool = False,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Train (or, with ``resume``, continue) the run described by ``config`` in ``out``.

    ``config`` is a resolved config (:func:`resolve_config`). With ``resume`` the run's own
    ``config.json`` is used (only ``steps`` may be raised) and training continues from
    ``checkpoints/last.pt`` exactly as if it had never stopped. Returns the run directory.
    """
    out = Path(out)
    config, ckpt = _open_run_dir(config, out, resume)
    world = max(1, int(os.environ.get("WORLD_SIZE", "1")))
    if world == 1:
        check_sizes(config, pick_device(config["loop"].get("device", "auto")))
    t = _set_up(config, ckpt)
    if world > 1:
        check_sizes(config, t.device, world)
    resume_bytes = _restore(t, ckpt, resume, out)
    with _stop_signals() as stop:
        if t.dist.main:
            _start_run_dir(out, config, resume)
        try:
            log = _MetricsLog(out / "metrics.jsonl", resume_bytes, t.dist.main)
            _wrap(t)
            _loop(t, log, out, progress, stop)
        except OSError as exc:  # a full disk while logging: one line, the run stays resumable
            err = write_error(Path(exc.filename or out), exc)
            if err is None:
                raise
            raise err from None
    if world > 1:
        _close_distributed()
    if echo is not None and t.dist.main:
        latest = t.latest
        echo(
            f"trained {int(config['steps'])} steps -> {out}"
            + "".join(f"  {k}={v:.4f}" for k, v in latest.items())
        )
    return out


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a clean point on SIGINT or SIGTERM: the checkpoint of ``step`` is
    written (``--resume`` continues exactly)."""

    def __init__(self, signum: int, step: int, out: Path) -> None:
        super().__init__(f"{signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.out = signum, step, out


@contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """While training: SIGINT and SIGTERM only record that they came (the loop stops after the
    current step and writes a checkpoint); the previous handlers come back afterwards. Only the
    main thread can install handlers; elsewhere the signals keep their handlers."""
    stop: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: Any) -> None:
        stop.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _start_run_dir(out: Path, config: dict[str, Any], resume: bool) -> None:
    """Write ``config.json`` (and ``checkpoints/``); when a fresh run cannot, remove what it
    made, so the directory is either absent (as before) or a run that ``--resume`` continues."""
    existed = out.exists()
    try:
        _write_config(out, config, resume)
    except BaseException:
        if not resume:
            if existed:
                shutil.rmtree(out / "checkpoints", ignore_errors=True)
            else:
                shutil.rmtree(out, ignore_errors=True)
        raise


def _stop_requested(t: _Trainer, stop: list[int]) -> int:
    """The signal that asks to stop (0: none); every process of a distributed run agrees."""
    flag = stop[0] if stop else 0
    if t.dist.world > 1:
        import torch.distributed as dist

        v = torch.tensor([flag], device=t.device)
        dist.all_reduce(v, op=dist.ReduceOp.MAX)
        flag = int(v.item())
    return flag


def _loop(t: _Trainer, log: _MetricsLog, out: Path, progress: bool | None, stop: list[int]) -> None:
    """The step loop up to ``config["steps"]``: train rows, evaluations, checkpoints; on a stop
    signal a checkpoint of the current step, then :class:`TrainingInterrupted`."""
    config = t.config
    steps = _step_log(t, log)
    loop, total = config["loop"], int(config["steps"])
    log_every = max(1, int(loop["log_every"]))
    bar = _progress_bar(progress, t, total)

    t.latest = steps.latest
    t.encoder.train()
    try:
        while t.step < total:
            loss = _train_step(t, total)
            steps.add(t.step, loss, t.loss_fn.lambdas())
            step = t.step
            do_eval = loop["eval_every"] and (step % int(loop["eval_every"]) == 0 or step == total)
            do_ckpt = loop["checkpoint_every"] and step % int(loop["checkpoint_every"]) == 0
            if step % log_every == 0 or do_eval or do_ckpt or step == total:
                steps.flush()
                if bar is not None:
                    bar.update(step - bar.n)
            if do_eval and t.dist.main:
                _evaluate(t, log, steps.latest)
            if do_ckpt or step == total:
                _save_checkpoint(t, log, out)
            if bar is not None and steps.latest:
                bar.set_postfix({k: f"{v:.4g}" for k, v in steps.latest.items()}, refresh=False)
            signum = _stop_requested(t, stop)
            if signum and step < total:
                steps.flush()
                if not do_ckpt:
                    _save_checkpoint(t, log, out)
                raise TrainingInterrupted(signum, step, out)
    finally:
        if bar is not None:
            bar.close()
        t.source.close()


def _train_step(t: _Trainer, total: int) -> torch.Tensor:
    """One optimisation step (learning rate, batch, forward, loss, backward, updates); advances
    ``t.step`` and returns the loss (on the device, not synchronised)."""
    if t.scheduled:
        _apply_lr(t.base_lrs, t.config["optim"], t.step, total)
    x1, x2 = t.source.next_batch(t.step)
    if t.channels_last and x1.dim() == 4:
        x1 = x1.contiguous(memory_format=torch.channels_last)
        x2 = x2.contiguous(memory_format=torch.channels_last)
    with torch.autocast(t.device.type, torch.bfloat16, enabled=t.amp):
        h = t.fwd(torch.cat([x1, x2]))
    b = x1.shape[0]
    # across ranks: the negatives of the global batch, scaled so that DDP's gradient average
    # equals one process's gradient on the whole batch (ident3d.train.distributed)
    to_backward, loss = global_batch_loss(
        t.loss_fn, h[:b].float(), h[b:].float(), int(t.config["batch_size"]), t.dist.world
    )
    t.opt.zero_grad(set_to_none=True)
    if t.lam_opt is not None:
        t.lam_opt.zero_grad(set_to_none=True)
    to_backward.backward()
    average_gradients(t.loss_params, t.dist.world)  # not wrapped by DDP: the same average
    t.opt.step()
    if t.lam_opt is not None:
        t.lam_opt.step()
    t.step += 1
    return loss


def _step_log(t: _Trainer, log: _MetricsLog) -> _StepLog:
    """The buffered ``train`` rows, with the loss normalisation and negatives of this run."""
    # every anchor sees the negatives of the global batch, on any number of ranks
    n_neg = t.loss_fn.n_negatives(int(t.config["batch_size"]))
    norm = t.loss_fn.normalised if isinstance(t.loss_fn, EnsembleLoss) else (lambda v: v)
    base_lr = t.base_lrs[0][1] if t.scheduled else None
    return _StepLog(log, norm, n_neg, t.config["optim"], base_lr, int(t.config["steps"]), t.step)


def _progress_bar(progress: bool | None, t: _Trainer, total: int) -> Any:
    """A tqdm bar on the main process when ``progress`` (default: stderr is a terminal)."""
    show = progress if progress is not None else sys.stderr.isatty()
    if not (show and t.dist.main):
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=t.step, unit="step", dynamic_ncols=True)


def _evaluate(t: _Trainer, log: _MetricsLog, latest: dict[str, Any]) -> None:
    """Score the encoder on the source's evaluation set and log an ``eval`` row."""
    _, z = t.source.eval_set()
    t.encoder.eval()
    with torch.no_grad():
        h = t.source.encode_eval(t.encoder, t.amp).double().cpu().numpy()
    t.encoder.train()
    lam = t.loss_fn.lambdas()
    learned = None if lam is None else lam.detach().double().cpu().numpy()
    true = getattr(getattr(t.source, "dgp", None), "true_lambdas", None)
    row: dict[str, Any] = {"kind": "eval", "step": t.step, **score(h, z, learned, true)}
    log.write([row])
    latest.update(r2=row["r2"], mcc=row["mcc"])
