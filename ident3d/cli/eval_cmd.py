"""``ident3d eval``: score a trained encoder (or compare reports); see ``docs/eval.md``."""

from __future__ import annotations

from pathlib import Path

import click

from ident3d.errors import UsageError


def _parse_blocks(specs: tuple[str, ...]) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, cols = spec.partition("=")
        if not sep or not name.strip() or not cols.strip():
            raise UsageError(
                f"--block must look like NAME=0,1,2, NAME=0-2 or NAME=pos_x,pos_y, got {spec!r}"
            )
        blocks[name.strip()] = [c.strip() for c in cols.split(",") if c.strip()]
    return blocks


@click.command("eval")
@click.option(
    "--run",
    "run_dir",
    type=click.Path(path_type=Path),
    help="Run directory (evaluates checkpoints/last.pt).",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    help="One checkpoint file of a run (instead of --run).",
)
@click.option(
    "--data",
    default=None,
    help="'synthetic' (fresh samples of a synthetic run's own process) or a dataset directory.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report directory (default RUN/eval, RUN/eval-step-N for --checkpoint); with "
    "--compare, where compare.md/png go.",
)
@click.option(
    "--compare",
    "compare_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Put reports side by side: give runs or report directories (repeat, or list after it).",
)
@click.option(
    "--samples", type=int, default=None, help="Samples to encode (default: all; synthetic 14336)."
)
@click.option(
    "--seed",
    type=int,
    default=0,
    help="Seed of the synthetic samples, of --encoder models built without --weights and of "
    "the --baseline ResNet18 (default 0).",
)
@click.option("--kernel/--no-kernel", default=True, help="Compute kernel-ridge R^2 (default on).")
@click.option(
    "--kernel-fit",
    type=int,
    default=None,
    help="Kernel ridge fit samples (default min(10240, N/2)).",
)
@click.option(
    "--fit-fraction",
    type=float,
    default=0.5,
    help="Linear R^2: fraction of samples that fit; the rest score (default 0.5).",
)
@click.option(
    "--block",
    "blocks",
    multiple=True,
    help="Factor group for block R^2, NAME=factor,factor (names, indices or ranges such as "
    "0-2, as --dims); repeatable.",
)
@click.option("--device", default="auto", help="auto (default: CUDA if present), cpu, cuda ...")
@click.option("--batch-size", type=int, default=None, help="Encoding batch size.")
@click.option("--num-workers", type=int, default=0, help="Data loader workers (default 0).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
@click.option(
    "--encoder",
    default=None,
    help="Score an encoder ident3d did not train: MODULE:CALLABLE or FILE.py:CALLABLE (called "
    "to get a torch.nn.Module), torchvision:NAME, or a TorchScript file. Needs --data DIR, --out.",
)
@click.option(
    "--weights",
    type=click.Path(path_type=Path),
    default=None,
    help="State dict for --encoder (torch.load weights_only=True: no pickled objects).",
)
@click.option(
    "--weights-key",
    default=None,
    help="Entry of --weights holding the state dict (e.g. state_dict, or model.encoder).",
)
@click.option(
    "--features",
    default=None,
    help="What of --encoder to score: penultimate (input of the last linear layer; default "
    "for torchvision), logits (the output; default otherwise) or a layer name.",
)
@click.option(
    "--embeddings",
    type=click.Path(path_type=Path),
    default=None,
    help="Score precomputed encodings: .npy or .pt, row i = sample i of --data DIR.",
)
@click.option("--embeddings-key", default=None, help="Tensor of a .pt --embeddings dict.")
@click.option("--resize", default=None, help="--encoder input size: N or HxW (default: as stored).")
@click.option(
    "--normalize",
    type=click.Choice(["dataset", "imagenet", "none"]),
    default="dataset",
    show_default=True,
    help="--encoder input normalisation: the dataset's channel mean/std, ImageNet's, or none "
    "(values in [0, 1]).",
)
@click.option("--bf16", is_flag=True, help="Encode under bfloat16 autocast (CUDA only).")
@click.option(
    "--baseline",
    is_flag=True,
    help="Also score a random-init ResNet18 (seeded by --seed) and raw pixels PCA'd to the "
    "encoder's width, on the same images.",
)
@click.argument("more", nargs=-1, type=click.Path(path_type=Path))
def eval_(
    run_dir: Path | None,
    checkpoint: Path | None,
    data: str | None,
    out: Path | None,
    compare_paths: tuple[Path, ...],
    samples: int | None,
    seed: int,
    kernel: bool,
    kernel_fit: int | None,
    fit_fraction: float,
    blocks: tuple[str, ...],
    device: str,
    batch_size: int | None,
    num_workers: int,
    progress: bool | None,
    encoder: str | None,
    weights: Path | None,
    weights_key: str | None,
    features: str | None,
    embeddings: Path | None,
    embeddings_key: str | None,
    resize: str | None,
    normalize: str,
    bf16: bool,
    baseline: bool,
    more: tuple[Path, ...],
) -> None:
    """Score how well a trained encoder identifies the ground-truth factors.

    Writes report.json, report.md and figures (predicted vs true per factor, per-factor R^2
    bars) and prints the per-factor table. Examples:
    `ident3d eval --run runs/an --data synthetic`;
    `ident3d eval --run runs/img --data data/test --out reports/img`;
    `ident3d eval --compare runs/a runs/b --out reports/ab`;
    `ident3d eval --encoder my_model.py:build --weights w.pt --data data/test --out reports/m`;
    `ident3d eval --embeddings h.npy --data data/test --out reports/h --baseline`.
    """
    from ident3d import eval as ev

    if compare_paths:
        if run_dir or checkpoint or data:
            raise UsageError("--compare takes reports only; drop --run/--checkpoint/--data")
        text, written = ev.compare([*compare_paths, *more], out)
        click.echo(text)
        if written:
            click.echo(f"wrote {', '.join(str(p) for p in written)}")
        else:
            click.echo("(give --out DIR to write compare.md and compare.png)")
        return
    if more:
        raise UsageError(
            f"unexpected argument {str(more[0])!r} (positional paths go with --compare)"
        )
    from ident3d.train.multimodal import is_image_text_run

    if run_dir is not None and is_image_text_run(run_dir):  # ident3d.eval.multimodal
        from ident3d.eval.multimodal import evaluate_image_text, report_markdown

        if not data or data == "synthetic":
            raise UsageError("an image/text run is evaluated on an image/text dataset: --data DIR")
        click.echo(report_markdown(evaluate_image_text(run_dir, data, out, device, kernel)))
        return
    external = encoder is not None or embeddings is not None
    given = [name for name, v in (("--run", run_dir), ("--checkpoint", checkpoint),
             ("--encoder", encoder), ("--embeddings", embeddings)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise UsageError(
            "give exactly one of --run RUN_DIR, --checkpoint FILE, --encoder SPEC or "
            "--embeddings FILE" + (f" (got {' and '.join(given)})" if given else "")
        )
    if data is None:
        raise UsageError("--data is required: 'synthetic' or a dataset directory")
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {batch_size}")
    if samples is not None and samples < 1:
        raise UsageError(f"--samples must be positive, got {samples}")
    block_spec = _parse_blocks(blocks) or None
    common = dict(
        samples=samples,
        seed=seed,
        kernel=kernel,
        kernel_fit=kernel_fit,
        fit_fraction=fit_fraction,
        blocks=block_spec,
        device=device,
        num_workers=num_workers,
        progress=progress,
        bf16=bf16,
        baseline=baseline,
    )
    if external:
        if out is None:
            raise UsageError("--out DIR is required with --encoder or --embeddings")
        result, written = ev.evaluate_encoder(
            encoder,
            data,
            out,
            embeddings=embeddings,
            embeddings_key=embeddings_key,
            weights=weights,
            weights_key=weights_key,
            features=features,
            resize=resize,
            normalize=normalize,
            batch_size=batch_size or 256,
            **common,
        )
    else:
        for opt, val in (("--weights", weights), ("--weights-key", weights_key),
                         ("--features", features), ("--embeddings-key", embeddings_key),
                         ("--resize", resize)):  # fmt: skip
            if val is not None:
                raise UsageError(f"{opt} goes with --encoder (a run uses its own preprocessing)")
        if normalize != "dataset":
            raise UsageError("--normalize goes with --encoder (a run uses its own preprocessing)")
        target = run_dir if run_dir is not None else checkpoint
        result, written = ev.evaluate_run(target, data, out, batch_size=batch_size, **common)
    rep = result.report
    src = rep["source"]
    if external:
        what = src.get("spec") or src.get("file")
        feat = f", features {src['features']}" if src.get("features") else ""
        click.echo(f"{src['form']} {what}{feat}, {rep['n_samples']} samples")
    else:
        click.echo(f"run {src['run']} step {src['step']}, {rep['n_samples']} samples")
    click.echo(ev.format_table(rep))
    if rep.get("blocks"):
        click.echo(ev.block_table(rep))
    lam = rep.get("lambda")
    if lam and "true" in lam:
        click.echo(
            f"lambda: mean relative error {lam['mean_relative_error']:.4f} (sorted "
            f"{lam['mean_sorted_relative_error']:.4f})"
        )
    if rep.get("baselines"):
        click.echo(ev.format_baselines(rep))
    click.echo(f"wrote {written[0].parent}/ ({', '.join(p.name for p in written)})")
