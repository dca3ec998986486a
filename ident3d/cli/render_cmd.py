"""``ident3d render`` and ``ident3d traverse``: thin click layers over :mod:`ident3d.render`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ident3d.cli.options import build_latent_model, latent_model_options, pop_latent_options
from ident3d.errors import UsageError

COMPRESSIONS = ("none", "lz4", "gzip")


@click.command("render")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Dataset directory (created; shards + manifest.json).",
)
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=None,
    help="Number of samples (pairs or images). Default 1000; with --latents, the file's rows.",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--preset", default="3dident", show_default=True, help="Scene preset (name or .toml)."
)
@click.option("--mode", default=None, help="Latent mode (3dident: box, periodic, clean).")
@click.option(
    "--quality",
    default=None,
    help="Quality preset: reference (the original settings), balanced, fast. "
    "Default: the preset's render.quality.",
)
@click.option(
    "--resolution",
    type=int,
    default=None,
    help="Image side in pixels (default: the preset's, 224).",
)
@click.option(
    "--pairs/--singles",
    default=True,
    show_default=True,
    help="Render exact pairs (z, z~) or i.i.d. single images.",
)
@latent_model_options
@click.option(
    "--latents",
    "latents_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Render these raw latents (.npy, (N, 10) or (N, 2, 10) pairs) instead of sampling.",
)
@click.option(
    "--object",
    "objects",
    multiple=True,
    help="Object class: teapot, suzanne, torus, cube, cylinder, sphere, cone or a mesh file "
    "(.obj/.ply/.stl/.glb). Repeat for a multi-class dataset. Default: the preset's.",
)
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes.")
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="Threads per worker (cores / W)."
)
@click.option(
    "--shard", "shard_spec", default=None,
    help="Render only shard group I of N: I/N; auto or auto/N reads I from JOB_COMPLETION_INDEX "
    "(Kubernetes Indexed Job) or SLURM_ARRAY_TASK_ID (docs/scaling.md).",
)  # fmt: skip
@click.option(
    "--shard-size", type=click.IntRange(min=1), default=1000, show_default=True,
    help="Samples per shard file.",
)  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue a killed run; skip committed shards.")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset in --out.")
@click.option("--gpu", is_flag=True, help="Render on a GPU (OptiX, else CUDA); fails without one.")
@click.option(
    "--gpus-per-worker", type=click.IntRange(min=0), default=None,
    help="With --gpu: GPUs each worker renders on (default: the workers spread over the GPUs, "
    "one GPU each or several workers per GPU; 0: every GPU in every worker).",
)  # fmt: skip
@click.option("--gpu-devices", default=None,
              help="With --gpu: only these device indices of Cycles' list, e.g. 0,2.")  # fmt: skip
@click.option(
    "--compression",
    type=click.Choice(COMPRESSIONS),
    default=None,
    help="Image compression in the shards (default: the store's).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--jobs", type=click.IntRange(min=1), default=None,
    help="Fan out: render with K jobs (a SLURM job array or K local processes, submitit), "
    "wait, retry, merge and verify (docs/scaling.md).",
)  # fmt: skip
@click.option(
    "--executor", type=click.Choice(["local", "slurm"]), default=None,
    help="Where the --jobs run (default local).",
)  # fmt: skip
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Re-submissions per failed or pre-empted job.")  # fmt: skip
@click.option("--no-wait", is_flag=True, help="With --jobs: return after submitting.")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Job scripts and logs of --jobs (default: OUT.jobs beside --out).")  # fmt: skip
@click.option("--slurm-partition", default=None, help="sbatch --partition.")
@click.option("--slurm-time", default=None, help="Time limit per job: minutes or D-H:M:S.")
@click.option("--slurm-cpus", type=click.IntRange(min=1), default=None,
              help="CPUs per job (sbatch --cpus-per-task).")  # fmt: skip
@click.option("--slurm-gpus", type=click.IntRange(min=0), default=None,
              help="GPUs per job (sbatch --gpus-per-node).")  # fmt: skip
@click.option("--slurm-mem", default=None, help="Memory per job (sbatch --mem), e.g. 16G.")
@click.option("--slurm-array-parallelism", type=click.IntRange(min=1), default=None,
              help="At most this many jobs of the array at once (default all).")  # fmt: skip
@click.option("--slurm-account", default=None, help="sbatch --account.")
@click.option(
    "--allow-outside-space",
    is_flag=True,
    help="Render --latents rows that lie outside the latent mode's space (recorded in the "
    "manifest); without it such a file is refused.",
)
@click.option(
    "--renderer",
    type=click.Choice(["blender", "mock"]),
    default="blender",
    hidden=True,
    help="'mock': a numpy stand-in for pipeline tests.",
)
@click.option(
    "--scm",
    "scm_file",
    default=None,
    help="Structural causal model over the factors: a TOML file ([factors.<name>] tables) "
    "or a bundled name (3didentbox-part2); added to the preset's [scm].",
)
@click.option(
    "--blocks",
    "blocks_spec",
    default=None,
    help="Roles of the preset's factor blocks, e.g. content=hues,style=positions,view=rotations "
    "(default: the preset's [pairs] default_blocks).",
)
def render(
    out: Path,
    n: int | None,
    seed: int,
    preset: str,
    mode: str | None,
    quality: str | None,
    resolution: int | None,
    pairs: bool,
    latents_file: Path | None,
    objects: tuple[str, ...],
    workers: int | None,
    threads: int | None,
    shard_spec: str | None,
    shard_size: int,
    resume: bool,
    overwrite: bool,
    gpu: bool,
    gpus_per_worker: int | None,
    gpu_devices: str | None,
    compression: str | None,
    quiet: bool,
    jobs: int | None,
    executor: str | None,
    retries: int,
    no_wait: bool,
    log_dir: Path | None,
    slurm_partition: str | None,
    slurm_time: str | None,
    slurm_cpus: int | None,
    slurm_gpus: int | None,
    slurm_mem: str | None,
    slurm_array_parallelism: int | None,
    slurm_account: str | None,
    allow_outside_space: bool,
    renderer: str,
    scm_file: str | None = None,
    blocks_spec: str | None = None,
    **kwargs: Any,
) -> None:
    """Render a dataset of exact image pairs (default) or single images.

    Example: ident3d render --out data/train --n 250000 --quality balanced --workers 2
    """
    from ident3d import render as R
    from ident3d import store
    from ident3d.render.workers import RenderInterrupted
    from ident3d.scenes import load_preset

    values = pop_latent_options(kwargs)
    if renderer == "blender":
        R.require_bpy()
    p = load_preset(preset)
    if "multimodal" in p.data:  # image/text pairs: ident3d.render.multimodal
        from ident3d.cli.multimodal_render import render_image_text

        return render_image_text(p, click.get_current_context(), locals())
    mode = mode or p.data["latents"]["default_mode"]
    mapping = p.mapping(mode)
    quality = quality or p.data["render"]["quality"]
    p.quality(quality)  # validates the name
    resolution = R.check_resolution(
        resolution if resolution is not None else p.data["render"]["resolution"]
    )
    objs = R.check_objects(list(objects) or p.object_classes)
    from ident3d.render.scheduler_env import resolve_shard

    shard = resolve_shard(shard_spec)
    from ident3d.render.gpus import GpuLayout, parse_devices

    if not gpu and (gpus_per_worker is not None or gpu_devices is not None):
        raise UsageError(
            f"{'--gpus-per-worker' if gpus_per_worker is not None else '--gpu-devices'} "
            "needs --gpu."
        )
    layout = GpuLayout(gpus_per_worker, parse_devices(gpu_devices)) if gpu else None
    slurm_given = [name for name, v in (("--slurm-partition", slurm_partition),
                   ("--slurm-time", slurm_time), ("--slurm-cpus", slurm_cpus),
                   ("--slurm-gpus", slurm_gpus), ("--slurm-mem", slurm_mem),
                   ("--slurm-array-parallelism", slurm_array_parallelism),
                   ("--slurm-account", slurm_account)) if v is not None]  # fmt: skip
    if jobs is None and (executor or no_wait or log_dir or slurm_given):
        given = (
            (executor and "--executor") or (no_wait and "--no-wait") or (log_dir and "--log-dir")
        )
        raise UsageError(f"{given or slurm_given[0]} needs --jobs K (the number of jobs).")
    if jobs is not None and shard is not None:
        raise UsageError("--jobs and --shard exclude each other: --jobs splits the dataset itself.")
    if slurm_given and executor != "slurm":
        raise UsageError(f"{slurm_given[0]} needs --executor slurm.")
    model = None
    latents = None
    source = None
    if latents_file is not None and (scm_file or blocks_spec):
        raise UsageError("--latents renders given latents; --scm and --blocks draw new ones.")
    if latents_file is not None:
        latents, file_pairs = R.load_latents_file(latents_file, mapping.raw_dim)
        if n is not None and n != len(latents):
            raise UsageError(f"--n {n} disagrees with {latents_file}, which holds {len(latents)}.")
        if not pairs and file_pairs:
            latents = latents[:, 0]
        elif pairs and not file_pairs:
            src = click.get_current_context().get_parameter_source("pairs")
            if src == click.core.ParameterSource.COMMANDLINE:
                raise UsageError(f"{latents_file} holds single latents (N, {mapping.raw_dim}).")
            pairs = False
        n = len(latents)
        source = {"path": str(latents_file.resolve()), "sha256": store.sha256_file(latents_file)}
        _check_inside(latents, mapping.default_space(), mode, latents_file, allow_outside_space)
        if allow_outside_space:
            source["allow_outside_space"] = True
    else:
        n = 1000 if n is None else n
        model = _structured_model(p, mapping.kind, values, scm_file, blocks_spec, objs)
        if model is None:
            model = build_latent_model(mapping.default_space(), values)
        if pairs and model.conditional is None:
            raise UsageError("--conditional none gives no pairs; add --singles.")
    job = R.RenderJob(
        preset=p,
        mode=mode,
        quality=quality,
        resolution=resolution,
        objects=objs,
        pairs=pairs,
        n=n,
        seed=seed,
        model=model,
        latents=latents,
        latents_source=source,
        renderer=renderer,
        gpu=gpu,
        gpu_layout=layout,
    )
    w = workers if workers is not None else R.default_workers()
    views = 2 if pairs else 1
    # the cheap refusals first, so bad input prints its one error line and no plan
    ctx = click.get_current_context()
    if (
        jobs is not None
        and ctx.get_parameter_source("shard_size") != click.core.ParameterSource.COMMANDLINE
    ):
        shard_size = max(1, min(shard_size, -(-n // jobs)))  # every one of the K jobs has work
    job.shard_size = int(shard_size) if shard_size >= 1 else job.shard_size
    R.check_out_dir(Path(out))
    R.check_size(job, Path(out), shard, compression or store.DEFAULT_COMPRESSION)
    if jobs is not None:
        _fan_out(job, out, jobs, executor or "local", retries, not no_wait, log_dir, workers,
                 threads, overwrite, compression or store.DEFAULT_COMPRESSION, shard_size, quiet,
                 R.FanoutSlurm(slurm_partition, slurm_time, slurm_cpus, slurm_gpus, slurm_mem,
                               slurm_array_parallelism, slurm_account))  # fmt: skip
        return
    click.echo(
        f"rendering {n} {'pairs' if pairs else 'images'} ({n * views} images) at {resolution} px, "
        f"quality {quality}, mode {mode}, {w} worker(s) x {threads or R.default_threads(w)} "
        f"thread(s){' on GPU' if gpu else ''} -> {out}"
    )
    try:
        summary = R.render_dataset(
            job,
            out,
            workers=w,
            threads=threads,
            shard=shard,
            resume=resume,
            overwrite=overwrite,
            compression=compression or store.DEFAULT_COMPRESSION,
            shard_size=shard_size,
            progress=not quiet,
        )
    except RenderInterrupted as exc:
        exc.args = (f"{exc}; the committed shards of {out} are kept: rerun with --resume.",)
        raise
    click.echo(summary.line())


def _structured_model(
    p: Any,
    kind: str,
    values: dict[str, Any],
    scm_file: str | None,
    blocks: str | None,
    objs: list[str],
) -> Any:
    """The preset's / the options' SCM and pair blocks (None: independent latents as before)."""
    from ident3d.latents import build_structured_model

    ctx = click.get_current_context()
    explicit = {
        k for k in values if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE
    }
    model = build_structured_model(
        p.data, p.path, kind=kind, values=values, explicit=explicit, blocks=blocks,
        scm_file=scm_file, n_classes=len(objs),
    )  # fmt: skip
    if model is not None and model.has_class and len(objs) < 2:
        raise UsageError(
            "the SCM draws the object class (object_class): give two or more --object classes."
        )
    return model


def _fan_out(
    job: Any, out: Path, jobs: int, executor: str, retries: int, wait: bool, log_dir: Path | None,
    workers: int | None, threads: int | None, overwrite: bool, compression: str,
    shard_size: int, quiet: bool, slurm: Any,
) -> None:  # fmt: skip
    """``--jobs K``: the dataset rendered by K submitit jobs (ident3d.render.fanout)."""
    import math

    from ident3d import render as R

    w = workers or 1
    jobs = min(jobs, math.ceil(job.n / shard_size))
    if executor == "local" and threads is None:  # K jobs share this machine's cores
        threads = max(1, R.default_threads(1) // (jobs * w))
    views = 2 if job.pairs else 1
    click.echo(
        f"rendering {job.n} {'pairs' if job.pairs else 'images'} ({job.n * views} images) at "
        f"{job.resolution} px, quality {job.quality}, mode {job.mode}, {jobs} {executor} job(s) "
        f"x {w} worker(s) x {threads or 'all'} thread(s){' on GPU' if job.gpu else ''} -> {out}"
    )
    summary = R.render_fanout(
        job, out, jobs=jobs, executor=executor, slurm=slurm, retries=retries, wait=wait,
        workers=w, threads=threads, overwrite=overwrite, compression=compression,
        shard_size=shard_size, log_dir=log_dir, progress=not quiet, echo=click.echo,
    )  # fmt: skip
    for line in summary.verify_lines:
        click.echo(line)
    click.echo(summary.line())


def _check_inside(latents: Any, space: Any, mode: str, path: Path, allow: bool) -> None:
    """Refuse ``--latents`` rows outside the mode's space unless ``--allow-outside-space``."""
    import json

    import numpy as np

    flat = latents.reshape(len(latents), -1, latents.shape[-1])
    inside = np.ones(len(latents), bool)
    for v in range(flat.shape[1]):
        inside &= space.contains(flat[:, v])
    if inside.all() or allow:
        return
    row = int(np.flatnonzero(~inside)[0])
    raise UsageError(
        f"{path}: row {row} ({int((~inside).sum())} row(s) in all) lies outside the {mode} "
        f"mode's space {json.dumps(space.to_config())}; pass --allow-outside-space to render "
        "it anyway."
    )


@click.command("traverse")
@click.option("--preset", default="3dident", show_default=True, help="Scene preset.")
@click.option("--mode", default=None, help="Latent mode (default: the preset's).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output figure (.png).",
)
@click.option("--steps", type=click.IntRange(2, 32), default=7, show_default=True)
@click.option("--resolution", type=int, default=96, show_default=True)
@click.option("--quality", default="fast", show_default=True)
@click.option("--object", "obj", default=None, help="Object shape or mesh (default: preset's).")
@click.option("--workers", type=click.IntRange(min=1), default=None)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--renderer", type=click.Choice(["blender", "mock"]), default="blender", hidden=True)
def traverse(
    preset: str,
    mode: str | None,
    out: Path,
    steps: int,
    resolution: int,
    quality: str,
    obj: str | None,
    workers: int | None,
    seed: int,
    renderer: str,
) -> None:
    """Render a latent traversal grid: one column per factor, each row a step along it."""
    from ident3d import render as R
    from ident3d.latents import FACTOR_NAMES
    from ident3d.scenes import load_preset

    if out.suffix.lower() != ".png":
        raise UsageError(f"--out must be a .png file, got {out}.")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise UsageError(f"output folder does not exist: {out.parent}")
    if renderer == "blender":
        R.require_bpy()
    p = load_preset(preset)
    mode = mode or p.data["latents"]["default_mode"]
    p.quality(quality)
    grid, values = R.traversal_latents(p.mapping(mode), steps, seed)
    flat = grid.reshape(-1, grid.shape[-1])
    images = R.render_scene_latents(
        p,
        mode,
        flat,
        quality=quality,
        resolution=resolution,
        objects=[obj or p.object_classes[0]],
        workers=workers if workers is not None else R.default_workers(),
        seed=seed,
        renderer=renderer,
    )
    images = images.reshape(steps, grid.shape[1], resolution, resolution, 3)
    R.traversal_figure(images, values, FACTOR_NAMES, out)
    click.echo(f"wrote {out} ({steps} steps x {grid.shape[1]} factors, mode {mode})")
