"""``ident3d train --modality image-text``: the image/text branch of ``ident3d train``."""

from __future__ import annotations

from typing import Any

import click

from ident3d.errors import UsageError

#: ``ident3d train`` options the image/text harness takes, and its config field for each.
_TAKEN = {
    "data": "data", "steps": "steps", "batch_size": "batch_size", "seed": "seed", "lr": "lr",
    "temperature": "temperature", "encoder": "image_encoder", "text_encoder": "text_encoder",
    "encoding_size": "encoding_size", "device": "device", "log_every": "log_every",
    "eval_data": "eval_data", "threads": "threads",
}  # fmt: skip
_IGNORED = {"out", "modality", "progress"}


def train_image_text_cli(o: dict[str, Any], ctx: click.Context) -> None:
    from ident3d.train.multimodal import ImageTextConfig, train_image_text

    for name in o:
        if name in _TAKEN or name in _IGNORED:
            continue
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE:
            raise UsageError(
                f"--{name.replace('_', '-')} is not available with --modality image-text."
            )
    if not o["data"] or o["data"] == "synthetic":
        raise UsageError("--modality image-text needs --data DIR, an image/text dataset.")
    if o["encoder"] == "mlp":
        raise UsageError("--encoder mlp is for synthetic data; image-text runs need a backbone.")
    kw = {field: o[name] for name, field in _TAKEN.items() if o.get(name) is not None}
    cfg = ImageTextConfig(**kw)
    out = train_image_text(cfg, o["out"], echo=click.echo)
    click.echo(f"wrote {out}")
    if cfg.eval_data:
        from ident3d.eval.multimodal import evaluate_image_text, report_markdown

        click.echo(report_markdown(evaluate_image_text(out, cfg.eval_data, device=cfg.device)))
