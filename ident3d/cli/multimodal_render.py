"""``ident3d render --preset multimodal3dident``: the image/text branch of ``ident3d render``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ident3d.errors import UsageError

#: Options of ``ident3d render`` that an image/text dataset does not take.
_REFUSED = {
    "pairs": "image/text datasets hold one image per sample (its pair is the caption); drop "
    "--pairs/--singles",
    "latents_file": "--latents is not available for image/text presets (their latents are drawn "
    "from the [multimodal] table)",
    "objects": "--object is not available for image/text presets: set object.classes in the preset",
    "shard_spec": "--shard is not available for image/text presets yet; render the whole dataset",
    "mode": "--mode is not available for image/text presets (they have one latent mapping)",
    "allow_outside_space": "--allow-outside-space applies to --latents only",
}

_TAKEN = {"out", "n", "seed", "preset", "quality", "resolution", "workers", "threads",
          "shard_size", "resume", "overwrite", "gpu", "compression", "quiet", "renderer"}  # fmt: skip


def render_image_text(preset: Any, ctx: click.Context, opts: dict[str, Any]) -> None:
    from ident3d import store
    from ident3d.render import default_threads, default_workers
    from ident3d.render.multimodal import MultimodalJob, render_multimodal

    for name, why in _REFUSED.items():
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise UsageError(f"{why}.")
    for name in ctx.params:
        if name in _TAKEN or name in _REFUSED:
            continue
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise UsageError(
                f"--{name.replace('_', '-')} is not available for image/text presets (their "
                "latents come from the [multimodal] table; one local render per dataset)."
            )
    quality = opts["quality"] or preset.data["render"]["quality"]
    preset.quality(quality)
    job = MultimodalJob(
        preset,
        quality,
        opts["resolution"]
        if opts["resolution"] is not None
        else preset.data["render"]["resolution"],
        1000 if opts["n"] is None else opts["n"],
        opts["seed"],
        renderer=opts["renderer"],
        gpu=opts["gpu"],
        shard_size=opts["shard_size"],
    )
    w = opts["workers"] if opts["workers"] is not None else default_workers()
    out = Path(opts["out"])
    click.echo(
        f"rendering {job.n} image/text pairs at {job.resolution} px, quality {quality}, "
        f"{w} worker(s) x {opts['threads'] or default_threads(w)} thread(s) -> {out}"
    )
    summary = render_multimodal(
        job,
        out,
        workers=w,
        threads=opts["threads"],
        resume=opts["resume"],
        overwrite=opts["overwrite"],
        compression=opts["compression"] or store.DEFAULT_COMPRESSION,
        progress=not opts["quiet"],
    )
    click.echo(summary.line())
