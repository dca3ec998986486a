"""``ident3d eval`` in one call: :func:`evaluate_run` loads a run, encodes, scores and writes
the report.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ident3d.errors import UsageError
from ident3d.eval.encode import SYNTHETIC_SAMPLES, encode_dataset, encode_synthetic
from ident3d.eval.scoring import EvalResult, default_blocks, evaluate, resolve_blocks, scorer
from ident3d.eval.write import write_report


def evaluate_run(
    run_path: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    *,
    samples: int | None = None,
    seed: int = 0,
    kernel: bool = True,
    kernel_fit: int | None = None,
    kernel_score: int | None = None,
    fit_fraction: float = 0.5,
    blocks: dict[str, Sequence[str | int]] | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
    bf16: bool = False,
    baseline: bool = False,
) -> tuple[EvalResult, list[Path]]:
    """Load a run (directory or checkpoint), encode ``data`` (``"synthetic"`` or a dataset
    directory), compute every metric and write the report into ``out`` (default
    ``<run>/eval``, or ``<run>/eval-step-<8-digit step>`` for a checkpoint other than
    ``last.pt``). ``bf16``: encode under bfloat16 autocast (CUDA). ``baseline``: add the
    ``baselines`` rows (image runs; see :func:`ident3d.eval.baseline.baseline_rows`).
    Returns the result and the written files."""
    from ident3d.train import load_run, pick_device

    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise UsageError(f"--out {out} is a file, not a report directory")
    dev = pick_device(device)
    run = load_run(run_path, dev)
    _check_sizes(run, str(data), samples, kernel, kernel_fit, dev)
    if baseline and str(data) == "synthetic":
        raise UsageError("--baseline scores images: it needs --data DIR, not synthetic data")
    if bf16 and str(data) == "synthetic":
        raise UsageError("--bf16 is for image encoders on --data DIR")
    if str(data) == "synthetic":
        enc = encode_synthetic(
            run,
            n=SYNTHETIC_SAMPLES if samples is None else samples,
            seed=seed,
            batch_size=batch_size or 4096,
            progress=progress,
        )
    else:
        enc = encode_dataset(
            run,
            data,
            n=samples,
            batch_size=batch_size or 256,
            num_workers=num_workers,
            progress=progress,
            bf16=bf16,
        )
    true_lam = run.dgp.true_lambdas if run.dgp is not None else None
    spec = run.dgp.spec.to_dict() if run.dgp is not None else None
    lambda_dims = None
    if spec is not None and spec.get("dims") is not None:
        lambda_dims = [int(i) for i in spec["dims"]]
    info = enc.factors
    roles: dict[str, str] = {}
    if blocks:
        block_idx = resolve_blocks(blocks, enc.names)
    elif spec is not None:
        block_idx = default_blocks(enc.names, spec, None if true_lam is None else list(true_lam))
    elif info is not None:  # a dataset: the manifest's pair structure (or --dims) blocks
        block_idx, roles = dict(info.blocks), dict(info.roles)
        if run.config.get("data", {}).get("views") == "augment":
            roles = {}  # trained on augmentations: the rendered pairs' roles do not apply
    else:
        block_idx = {}

    factor_kw: dict[str, Any] = {  # the same for the encoder and its baselines
        "blocks": block_idx or None,
        "factor_types": info.types if info is not None else None,
        "block_roles": roles or None,
        "labels": info.labels(enc.z) if info is not None and info.discrete else None,
    }
    result = evaluate(
        enc.h,
        enc.z,
        enc.names,
        fit_fraction=fit_fraction,
        kernel=kernel,
        kernel_fit=kernel_fit,
        kernel_score=kernel_score,
        device=dev,
        learned_lambdas=run.lambdas,
        true_lambdas=true_lam if run.lambdas is not None else None,
        lambda_dims=lambda_dims,
        **factor_kw,
    )
    rep = result.report
    ck = Path(run_path)
    rep["source"] = {
        "run": str(run.path),
        "checkpoint": str(ck if ck.is_file() else ck / "checkpoints" / "last.pt"),
        "step": int(run.step),
        "loss": run.config.get("loss", {}).get("name"),
        "model": run.config.get("model", {}).get("kind"),
    }
    rep["dataset"] = enc.dataset
    if roles and info is not None:  # where the blocks' roles came from
        rep["blocks_from"] = info.block_source
    rep["timing"]["encode_s"] = enc.encode_s
    if baseline:
        from ident3d.eval.benchmark import add_baselines

        score = scorer(  # the run's protocol on a baseline's encodings
            enc.z,
            enc.names,
            fit_fraction=fit_fraction,
            kernel=kernel,
            kernel_fit=kernel_fit,
            kernel_score=kernel_score,
            device=dev,
            **factor_kw,
        )

        add_baselines(
            result,
            data,
            run.preprocess,
            score,
            dev,
            n=enc.dataset["n"],
            batch_size=batch_size or 256,
            num_workers=num_workers,
            seed=seed,
            progress=progress,
        )
    rep["device"] = str(dev)
    rep["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    if out is None:  # RUN/eval for the last checkpoint, RUN/eval-step-<8-digit step> for another
        out = Path(run.path) / (
            "eval" if not ck.is_file() or ck.name == "last.pt" else f"eval-{ck.stem}"
        )
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a report directory")
    written = write_report(result, out)
    return result, written


def _check_sizes(
    run: Any,
    data: str,
    samples: int | None,
    kernel: bool,
    kernel_fit: int | None,
    device: Any,
) -> None:
    """Refuse sizes that cannot fit before encoding: fresh synthetic samples (observations,
    encodings and factors in float64, each a few copies) and the kernel ridge matrices
    (three float64 ``fit x fit`` kernels)."""
    from ident3d.train.memory import available_bytes

    free = available_bytes(device)
    if free is None:
        return
    cfg = run.config
    n = samples
    need = 0
    if data == "synthetic":
        n = SYNTHETIC_SAMPLES if samples is None else int(samples)
        m = cfg["model"]
        width = int(m.get("n_in", 10)) + max([int(w) for w in m.get("hidden", [])] or [1])
        need += 3 * 8 * n * (width + int(m.get("n_out", 10)) + int(cfg["data"].get("n", 10)))
    if kernel and (kernel_fit is not None or n is not None):
        fit = int(kernel_fit) if kernel_fit is not None else min(10240, int(n or 0) // 2)
        need += 3 * 8 * fit * fit
    if need > free:
        what = (
            f"--kernel-fit {kernel_fit}"
            if kernel_fit is not None and 24 * int(kernel_fit) ** 2 > need // 2
            else f"--samples {n}"
        )
        raise UsageError(
            f"{what} needs at least {need / 2**30:.3g} GiB but {device} has "
            f"{free / 2**30:.3g} GiB free; lower it"
        )
