"""``ident3d latents``: sample latent pairs under a chosen space and conditional."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from ident3d.cli.options import build_latent_model, latent_model_options, pop_latent_options
from ident3d.errors import UsageError
from ident3d.latents import FACTOR_NAMES, build_structured_model, make_space
from ident3d.resources import available_memory, free_disk
from ident3d.scenes import load_preset


@click.command("latents")
@click.option(
    "--n",
    "n",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Number of samples (pairs unless --conditional none).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--preset",
    default="3dident",
    show_default=True,
    help="Scene preset whose latent mode sets the default space.",
)
@click.option(
    "--mode",
    default=None,
    help="Latent mode of the preset (3dident: box, periodic, clean). "
    "Default: the preset's default mode.",
)
@click.option(
    "--space",
    type=click.Choice(["box", "sphere", "unbounded"]),
    default=None,
    help="Sample on this space instead of the preset mode's (with --dim).",
)
@click.option(
    "--dim", type=click.IntRange(min=1), default=10, show_default=True, help="Dimension of --space."
)
@latent_model_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output .npz file.",
)
@click.option(
    "--scm",
    "scm_file",
    default=None,
    help="Structural causal model (TOML file or bundled name), as in ident3d render.",
)
@click.option(
    "--blocks",
    "blocks_spec",
    default=None,
    help="Roles of the preset's factor blocks, e.g. content=hues,style=positions.",
)
@click.option("--classes", "n_classes", type=click.IntRange(min=2), default=None,
              help="Number of object classes when the SCM draws object_class "
                   "(default: the preset's object classes).")  # fmt: skip
def latents(
    n: int,
    seed: int,
    preset: str,
    mode: str | None,
    space: str | None,
    dim: int,
    out: Path,
    scm_file: str | None = None,
    blocks_spec: str | None = None,
    n_classes: int | None = None,
    **kwargs: Any,
) -> None:
    """Sample latents (z, z~) and save them as an .npz.

    The file holds `z` (n, d) and, for pairs, `z_tilde` (n, d), in raw units; `z_scene`
    (n, 2, 10) or (n, 10) in scene units when the space is a preset's latent mode; and `config`
    (JSON: the resolved latent model and seed). Defaults follow the 3dident preset: uniform on
    [-1, 1]^10, a normal conditional with sigma 0.1.
    """
    values = pop_latent_options(kwargs)
    mapping = None
    model: Any = None
    classes = None
    if space is None:
        p = load_preset(preset)
        mapping = p.mapping(mode)
        sp = mapping.default_space()
        ctx = click.get_current_context()
        explicit = {k for k in values
                    if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}  # fmt: skip
        k = n_classes or len(p.object_classes)
        model = build_structured_model(
            p.data, p.path, kind=mapping.kind, values=values, explicit=explicit,
            blocks=blocks_spec, scm_file=scm_file, n_classes=k,
        )  # fmt: skip
        if model is not None and model.has_class and k < 2:
            raise UsageError("the SCM draws object_class: give --classes K (K >= 2).")
    else:
        if mode is not None:
            raise UsageError("--mode and --space exclude each other")
        if scm_file or blocks_spec:
            raise UsageError("--scm and --blocks act on a preset's factors, not on --space.")
        sp = make_space(space, dim)
    if model is None:
        model = build_latent_model(sp, values)
    pairs = model.conditional is not None or getattr(model, "structure", None) is not None
    _check_size(n, sp.dim, pairs, mapping is not None, out)
    if hasattr(model, "sample_range_with_classes"):
        z, cls = model.sample_range_with_classes(0, n, seed, pairs)
        classes = cls if model.has_class else None
    else:
        z = model.sample_pairs(n, seed) if pairs else model.sample(n, seed)
    config = {
        "seed": seed,
        "n": n,
        "pairs": pairs,
        "latent_model": model.to_config(),
        "mapping": None if mapping is None else mapping.to_config(),
        "preset": preset if mapping is not None else None,
    }
    arrays: dict[str, np.ndarray] = {"config": np.array(json.dumps(config))}
    if pairs:
        arrays["z"], arrays["z_tilde"] = z[:, 0], z[:, 1]
    else:
        arrays["z"] = z
    if mapping is not None:
        arrays["z_scene"] = mapping.to_scene(z)
    if classes is not None:
        arrays["classes"] = classes
    _save_npz(out, arrays)
    click.echo(summary(z, pairs, model.to_config(), mapping is not None))
    click.echo(f"wrote {out} ({n} {'pairs' if pairs else 'samples'}, seed {seed})")


#: Peak working copies of the sample array while sampling, mapping and saving (measured ~3).
_WORKING_COPIES = 4


def _check_size(n: int, dim: int, pairs: bool, scene: bool, out: Path) -> None:
    """Refuse an ``--n`` whose arrays cannot fit in memory or on the disk of ``--out``."""
    views = 2 if pairs else 1
    file_bytes = n * views * dim * 8 + (n * views * 10 * 8 if scene else 0)
    need_mem = file_bytes * _WORKING_COPIES
    avail = available_memory()
    if avail is not None and need_mem > avail:
        raise UsageError(
            f"--n {n}: sampling needs about {need_mem / 2**30:.3g} GiB of memory and "
            f"{avail / 2**30:.3g} GiB is available; sample fewer latents."
        )
    disk = free_disk(out.parent)
    if disk is None:
        return
    parent, free = disk
    if file_bytes > free:
        raise UsageError(
            f"--n {n}: {out} would take about {file_bytes / 2**30:.3g} GiB and {parent} has "
            f"{free / 2**30:.3g} GiB free; sample fewer latents."
        )


def _save_npz(out: Path, arrays: dict[str, np.ndarray]) -> None:
    if out.suffix != ".npz":
        raise UsageError(f"--out must end in .npz, got {out}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"output folder does not exist: {parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary(z: np.ndarray, pairs: bool, model_cfg: dict[str, Any], named: bool) -> str:
    """A per-dimension table of the samples' statistics (and of z~ - z for pairs)."""
    z0 = z[:, 0] if pairs else z
    d = z0.shape[1]
    names = list(FACTOR_NAMES) if named and d == len(FACTOR_NAMES) else [f"z{i}" for i in range(d)]
    cond = model_cfg["conditional"]
    lines = [
        f"space: {json.dumps(model_cfg['space'])}",
        f"marginal: {json.dumps(model_cfg.get('marginal', 'scm'))}   "
        f"conditional: {json.dumps(cond)}",
    ]
    head = f"{'dim':<16}{'mean':>9}{'std':>9}{'min':>9}{'max':>9}"
    if pairs:
        diff = z[:, 1] - z[:, 0]
        head += f"{'E|dz|':>9}{'std dz':>9}"
    lines.append(head)
    for i in range(d):
        row = (
            f"{names[i]:<16}{z0[:, i].mean():>9.4f}{z0[:, i].std():>9.4f}"
            f"{z0[:, i].min():>9.4f}{z0[:, i].max():>9.4f}"
        )
        if pairs:
            row += f"{np.abs(diff[:, i]).mean():>9.4f}{diff[:, i].std():>9.4f}"
        lines.append(row)
    if pairs:
        dist = np.linalg.norm(z[:, 1] - z[:, 0], axis=1)
        lines.append(
            f"pair distance |z~ - z|: mean {dist.mean():.4f}, median {np.median(dist):.4f}"
        )
    return "\n".join(lines)
