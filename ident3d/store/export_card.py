"""The dataset card of an ecosystem export (``README.md`` of ``--format hf | webdataset``):
what the dataset is, its columns or files, the factor table and how it was made
(:func:`generation_command`, rebuilt from the manifest's config).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from ident3d import __version__

_DEFAULT_SHARD_SIZE = 1000


def _num(v: Any) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _latent_options(model: dict[str, Any]) -> list[str]:
    """``ident3d render`` options that rebuild a ``LatentModel.to_config()`` (its space comes
    from the latent mode)."""
    args: list[str] = []
    marg = model.get("marginal") or {"type": "uniform"}
    if marg.get("type") == "normal":
        args += ["--marginal", "normal", "--marginal-scale", _num(marg["sigma"])]
    elif marg.get("type") == "laplace":
        args += ["--marginal", "laplace", "--marginal-scale", _num(marg["scale"])]
    cond = model.get("conditional")
    if not cond:
        return [*args, "--conditional", "none"]
    kind = cond.get("type")
    args += ["--conditional", str(kind)]
    if kind == "normal":
        args += ["--sigma", _num(cond["sigma"])]
    elif kind in ("laplace", "gennormal"):
        args += ["--sigma", _num(cond["scale"])]
        if kind == "gennormal":
            args += ["--p", _num(cond["p"])]
    elif kind == "vmf":
        args += ["--kappa", _num(cond["kappa"])]
    elif kind == "anisotropic":
        args += ["--lambdas", ",".join(_num(v) for v in cond["lambdas"])]
    if cond.get("dims") is not None:
        args += ["--dims", ",".join(str(int(i)) for i in cond["dims"])]
    if cond.get("ext_tol") is not None:
        args += ["--ext-tol", _num(cond["ext_tol"])]
    return args


def generation_command(manifest: dict[str, Any], out: str = "DATASET") -> str | None:
    """The ``ident3d`` command that made a dataset, rebuilt from its manifest: ``ident3d
    render ...`` for renders (every option that enters the config, plus the shard size and
    compression; workers and threads do not change the pixels), ``ident3d convert SRC ...``
    for conversions; None when the config does not say. A structured latent model (SCM and
    pair blocks) is left to the preset: the command then ends in a comment saying so, and is
    exact when the preset's own model was used."""
    cfg = manifest.get("config") or {}
    if cfg.get("command") == "render":
        preset = ((cfg.get("preset") or {}).get("data") or {}).get("preset", {}).get("name")
        args = ["ident3d", "render", "--out", out, "--n", str(cfg["n"]), "--seed", str(cfg["seed"])]
        if preset:
            args += ["--preset", str(preset)]
        if cfg.get("mode"):
            args += ["--mode", str(cfg["mode"])]
        quality = cfg.get("quality") or {}
        if quality.get("name"):
            args += ["--quality", str(quality["name"])]
        if cfg.get("resolution") is not None:
            args += ["--resolution", str(cfg["resolution"])]
        args.append("--pairs" if cfg.get("pairs") else "--singles")
        if cfg.get("latents_file"):
            args += ["--latents", str(cfg["latents_file"]["path"])]
            if cfg["latents_file"].get("allow_outside_space"):
                args.append("--allow-outside-space")
        elif cfg.get("latent_model"):
            structured = cfg["latent_model"].get("type") == "structured"
            if not structured:
                args += _latent_options(cfg["latent_model"])
        for obj in cfg.get("objects") or []:
            args += ["--object", str(obj)]
        if int(manifest.get("shard_size", _DEFAULT_SHARD_SIZE)) != _DEFAULT_SHARD_SIZE:
            args += ["--shard-size", str(manifest["shard_size"])]
        if manifest.get("compression"):
            args += ["--compression", str(manifest["compression"])]
        if cfg.get("renderer") and cfg["renderer"] != "blender":
            args += ["--renderer", str(cfg["renderer"])]
        cmd = shlex.join(args)
        if (cfg.get("latent_model") or {}).get("type") == "structured":
            # the preset's SCM and pair blocks; --scm / --blocks / latent options that changed
            # them are in the config, not rebuilt here
            cmd += "  # latent model: the preset's structured model (see the config)"
        return cmd
    if cfg.get("origin") == "converted":
        src = cfg.get("source") or {}
        args = ["ident3d", "convert", str(src.get("path", "SRC")), out]
        if manifest.get("shard_size"):
            args += ["--shard-size", str(manifest["shard_size"])]
        if manifest.get("compression"):
            args += ["--compression", str(manifest["compression"])]
        return shlex.join(args)
    return None


def _factor_table(manifest: dict[str, Any]) -> list[str]:
    table = manifest.get("factor_table") or []
    if not table:
        return ["(the manifest has no factor table)"]
    lines = [
        "| column | name | kind | raw range | scene unit | description |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        rng = row.get("raw_range")
        lines.append(
            f"| {row.get('index', '')} | `{row.get('name', '')}` | {row.get('kind', '')} | "
            f"{rng if rng is not None else ''} | {row.get('scene_unit', '')} | "
            f"{row.get('description', '')} |"
        )
    return lines


def dataset_card(
    manifest: dict[str, Any],
    fmt: str,
    layout: list[str],
    usage: str,
    front_matter: str = "",
) -> str:
    """``README.md`` for an export in ``fmt``: summary, ``layout`` lines (columns or files),
    the ``usage`` snippet, the factor table and the generation command + config."""
    kind = manifest["kind"]
    n = int(manifest["n"])
    classes = manifest.get("class_names") if manifest.get("has_class") else None
    raw_dim = int(manifest["raw_dim"])
    cmd = generation_command(manifest)
    lines = []
    if front_matter:
        lines += ["---", front_matter.rstrip("\n"), "---", ""]
    lines += [
        f"# ident3d dataset ({fmt} export)",
        "",
        f"{n:,} {'positive pairs (two views each)' if kind == 'pairs' else 'images'} of "
        f"{manifest['width']} x {manifest['height']} RGB, rendered or converted with "
        f"ident3d (3DIdent-family identifiability benchmarks), exported "
        f"by ident3d {__version__}. Each sample carries its ground-truth latents: `raw_latents` "
        f"({raw_dim} columns, what the data were generated from and what identifiability is "
        "scored against) and `latents` (the same in scene units: 10 factors, positions in "
        "scene units, angles in radians).",
        "",
    ]
    if kind == "pairs":
        lines += [
            "Pairs: view 0 is the anchor `z`, view 1 the positive `z~` drawn from the "
            "conditional p(z~ | z); row i holds both views of pair i.",
            "",
        ]
    if classes:
        lines += [f"Classes: {', '.join(f'{i} = {c}' for i, c in enumerate(classes))}.", ""]
    lines += ["## Layout", "", *layout, "", "## Loading", "", usage.rstrip("\n"), ""]
    lines += ["## Factors (scene latents, in column order)", "", *_factor_table(manifest), ""]
    if raw_dim != 10:
        lines += [
            f"The raw latents have {raw_dim} columns (the latent mode's raw space, e.g. the "
            "periodic mode's angles as points on circles); `latents` has the 10 factors above.",
            "",
        ]
    lines += ["## How it was made", ""]
    if cmd:
        lines += [
            "The command (rebuilt from the source dataset's manifest; worker and thread counts "
            "do not change the pixels):",
            "",
            "```bash",
            cmd,
            "```",
            "",
        ]
    else:
        lines += ["The manifest does not record a command; its config is below.", ""]
    versions = manifest.get("versions") or {}
    lines += [
        f"Created {manifest.get('created', '?')} with "
        + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "<details><summary>the full config from manifest.json</summary>",
        "",
        "```json",
        json.dumps(manifest.get("config") or {}, indent=1, sort_keys=True),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)
