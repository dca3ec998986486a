"""``ident3d train``: train a contrastive encoder on synthetic data or a stored dataset."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import click

from ident3d.errors import UsageError

_ENCODER_HELP = "mlp (synthetic default) or a torchvision model name (default resnet18)."


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _put(d: dict[str, Any], section: str | None, key: str, value: Any) -> None:
    if value is None:
        return
    if section is None:
        d[key] = value
    else:
        d.setdefault(section, {})[key] = value


@click.command("train")
@click.option(
    "--data",
    "data",
    default=None,
    help="'synthetic' (default) or a dataset directory written by ident3d render.",
)
@click.option(
    "--loss",
    "loss",
    default=None,
    type=click.Choice(["infonce", "aninfonce", "ensemble"]),
    help="Contrastive loss (default infonce; ensemble members come from --config).",
)
@click.option("--steps", type=int, default=None, help="Optimisation steps (default 30000).")
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Pairs per step (default: 6144 synthetic InfoNCE, 1000 AnInfoNCE, 512 images).",
)
@click.option("--seed", type=int, default=None, help="Seed of every random draw (default 0).")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Run directory (config.json, metrics.jsonl, checkpoints/).",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option(
    "--verify-data/--no-verify-data",
    default=True,
    show_default=True,
    help="Check the SHA-256 of every shard of the training and evaluation datasets before "
    "training (and on --resume), so corrupted bytes are an error instead of silent training "
    "data; about one read of the dataset.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file (or a .json such as a run's config.json) with the same sections as "
    "config.json; flags override it.",
)
# model
@click.option("--encoder", default=None, help=_ENCODER_HELP)
@click.option(
    "--hidden",
    default=None,
    help="MLP hidden widths, comma-separated (default 10n,50n,50n,50n,50n,10n).",
)
@click.option(
    "--constraint",
    type=click.Choice(["none", "box", "sphere"]),
    default=None,
    help="Output constraint (default: sphere synthetic, none images).",
)
@click.option("--radius", type=float, default=None, help="Sphere radius (default 1).")
@click.option("--learn-radius", is_flag=True, default=None, help="Learn the sphere radius.")
@click.option("--box-bound", type=float, default=None, help="Box constraint bound (default 1).")
# loss
@click.option(
    "--similarity",
    type=click.Choice(["lp", "dot", "cosine"]),
    default=None,
    help="InfoNCE similarity (default: dot synthetic, lp images).",
)
@click.option(
    "--p", "p", type=float, default=None, help="p of the lp similarity -||a-b||_p^p (default 2)."
)
@click.option(
    "--temperature",
    type=float,
    default=None,
    help="InfoNCE temperature (default: 0.05 synthetic = 1/kappa, 1.0 images).",
)
@click.option(
    "--negatives",
    type=click.Choice(["both", "cross"]),
    default=None,
    help="Negatives from both views (default, 2B-2) or the other view only (B-1).",
)
@click.option(
    "--symmetric/--no-symmetric", default=None, help="Use both views as anchors (default yes)."
)
@click.option(
    "--hard-negative-beta",
    type=float,
    default=None,
    help="Hard-negative concentration beta (default 0 = plain InfoNCE).",
)
@click.option("--lr", type=float, default=None, help="Encoder Adam learning rate (default 1e-4).")
@click.option(
    "--lambda-lr", type=float, default=None, help="AnInfoNCE lambda Adam lr (default 1e-3)."
)
@click.option(
    "--lr-schedule",
    type=click.Choice(["constant", "cosine"]),
    default=None,
    help="Learning-rate schedule of both optimisers (default constant, the papers').",
)
@click.option(
    "--warmup-steps", type=int, default=None, help="Linear learning-rate warm-up (default 0)."
)
@click.option(
    "--min-lr-ratio",
    type=float,
    default=None,
    help="Cosine schedule: final lr as a fraction of --lr (default 0).",
)
# synthetic data
@click.option("--n", "n", type=int, default=None, help="Synthetic latent dimension (default 10).")
@click.option(
    "--space",
    type=click.Choice(["box", "sphere", "extended_sphere", "unbounded"]),
    default=None,
    help="Synthetic latent space (default sphere; AnInfoNCE extended_sphere).",
)
@click.option(
    "--marginal",
    type=click.Choice(["uniform", "normal", "laplace"]),
    default=None,
    help="Synthetic marginal (default uniform).",
)
@click.option(
    "--conditional",
    type=click.Choice(["normal", "laplace", "gennormal", "vmf", "anisotropic"]),
    default=None,
    help="Synthetic conditional (default vmf; AnInfoNCE anisotropic).",
)
@click.option("--sigma", type=float, default=None, help="Conditional scale (default 0.05).")
@click.option("--kappa", type=float, default=None, help="vMF concentration (default 20 = 1/0.05).")
@click.option(
    "--gennorm-p", type=float, default=None, help="Generalised normal shape p (default 2)."
)
@click.option(
    "--lambdas",
    default=None,
    help="Anisotropic precisions: bimodal, linspace (default) or comma-separated numbers.",
)
@click.option(
    "--dims",
    default=None,
    help="Latent dims the conditional changes: indices, ranges or names, e.g. '0-2,5' "
    "(default all).",
)
@click.option("--ext-tol", type=float, default=None, help="Extended-sphere shell (default 0.1).")
@click.option("--mixing-depth", type=int, default=None, help="Mixing MLP layers (default 3).")
@click.option("--mixing-seed", type=int, default=None, help="Mixing MLP seed (default 0).")
# dataset
@click.option(
    "--pairs",
    type=click.Choice(["auto", "exact", "knn"]),
    default=None,
    help="Pairs of a dataset: exact rendered pairs or kNN pairs of i.i.d. renders (default auto).",
)
@click.option(
    "--knn-conditional",
    type=click.Choice(["normal", "laplace", "gennormal"]),
    default=None,
    help="kNN pairs: conditional drawn before the nearest-neighbour snap (default normal).",
)
@click.option("--knn-sigma", type=float, default=None, help="kNN pairs: its scale (default 0.1).")
@click.option(
    "--resident/--no-resident",
    default=None,
    help="Hold the dataset on the device (default: on CUDA when it fits in 40% of free memory).",
)
@click.option(
    "--eval-data", default=None, help="Dataset for periodic evaluation (default: the training set)."
)
@click.option(
    "--views",
    type=click.Choice(["pairs", "augment"]),
    default=None,
    help="Positive pairs of a dataset: the rendered/kNN pairs (default) or two augmentations "
    "of one image (crop, flip, colour jitter, grayscale; on the training device).",
)
@click.option(
    "--crop-size",
    type=int,
    default=None,
    help="--views augment: RandomResizedCrop output size (default: the dataset's resolution).",
)
@click.option(
    "--crop-scale",
    type=click.Choice(["small", "large"]),
    default=None,
    help="--views augment: crop area scale (0.08, 1) 'small' (default) or (0.8, 1) 'large'.",
)
@click.option(
    "--rotations/--no-rotations",
    default=None,
    help="--views augment: rotate the two views by two distinct multiples of 90 degrees.",
)
# loop
@click.option(
    "--checkpoint-every", type=int, default=None, help="Steps between checkpoints (default 1000)."
)
@click.option(
    "--eval-every",
    type=int,
    default=None,
    help="Steps between evaluations (default 1000, 0 = off).",
)
@click.option(
    "--eval-samples", type=int, default=None, help="Held-out samples per evaluation (default 4096)."
)
@click.option(
    "--log-every", type=int, default=None, help="Steps between metrics flushes (default 50)."
)
@click.option(
    "--device", default=None, help="auto (default: CUDA if present), cpu, cuda, cuda:1 ..."
)
@click.option(
    "--amp",
    type=click.Choice(["auto", "on", "off"]),
    default=None,
    help="bf16 autocast (default auto = on for CUDA).",
)
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=None,
    help="torch.compile the encoder (default off).",
)
@click.option(
    "--channels-last/--no-channels-last", default=None, help="channels_last images (default on)."
)
@click.option("--num-workers", type=int, default=None, help="Data loader workers (default 2).")
@click.option(
    "--threads", type=int, default=None, help="torch CPU threads (default 0 = torch's choice)."
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal)."
)
@click.option(
    "--modality",
    type=click.Choice(["image", "image-text"]),
    default="image",
    show_default=True,
    help="image-text: an image and a text encoder on an image/text dataset (Multimodal3DIdent).",
)
@click.option("--text-encoder", default=None, help="image-text: text encoder (default conv1d).")
@click.option(
    "--encoding-size", type=int, default=None, help="image-text: encoding dimension (default 4)."
)
def train(**o: Any) -> None:
    """Train a contrastive encoder (InfoNCE family or AnInfoNCE) and write a run directory.

    Examples: `ident3d train --data synthetic --loss aninfonce --steps 30000 --out runs/an`;
    `ident3d train --data renders/pairs --steps 30000 --out runs/img`;
    `ident3d train --data m3di/train --modality image-text --steps 20000 --out runs/it`.
    """
    from ident3d import train as tr

    if o["modality"] == "image-text":  # ident3d.train.multimodal
        from ident3d.cli.multimodal_train import train_image_text_cli

        return train_image_text_cli(o, click.get_current_context())
    for name in ("text_encoder", "encoding_size"):
        if o[name] is not None:
            raise UsageError(f"--{name.replace('_', '-')} needs --modality image-text.")

    user: dict[str, Any] = tr.load_toml(o["config_file"]) if o["config_file"] else {}
    for key in ("steps", "batch_size", "seed"):
        _put(user, None, key, o[key])
    data = o["data"]
    if data is not None:
        if data == "synthetic":
            user.setdefault("data", {})["kind"] = "synthetic"
        else:
            user.setdefault("data", {}).update(kind="dataset", path=data)
    _put(user, "loss", "name", o["loss"])
    if o["encoder"] is not None:
        if o["encoder"] == "mlp":
            _put(user, "model", "kind", "mlp")
        else:
            user.setdefault("model", {}).update(kind="torchvision", backbone=o["encoder"])
    if o["hidden"] is not None:
        _put(user, "model", "hidden", [int(v) for v in _floats(o["hidden"], "--hidden")])
    for flag, key in (
        ("constraint", "constraint"),
        ("radius", "radius"),
        ("learn_radius", "learn_radius"),
        ("box_bound", "bound"),
    ):
        _put(user, "model", key, o[flag])
    for flag in ("similarity", "p", "temperature", "negatives", "symmetric", "hard_negative_beta"):
        _put(user, "loss", flag, o[flag])
    _put(user, "optim", "lr", o["lr"])
    _put(user, "optim", "lambda_lr", o["lambda_lr"])
    _put(user, "optim", "schedule", o["lr_schedule"])
    _put(user, "optim", "warmup_steps", o["warmup_steps"])
    _put(user, "optim", "min_lr_ratio", o["min_lr_ratio"])
    for flag in (
        "n",
        "space",
        "marginal",
        "conditional",
        "sigma",
        "kappa",
        "ext_tol",
        "mixing_depth",
        "mixing_seed",
    ):
        _put(user, "data", flag, o[flag])
    _put(user, "data", "p", o["gennorm_p"])
    if o["lambdas"] is not None:
        lam = o["lambdas"].strip().lower()
        _put(
            user,
            "data",
            "lambdas",
            lam if lam in ("bimodal", "linspace") else _floats(lam, "--lambdas"),
        )
    if o["dims"] is not None:  # indices, ranges or names, read as ident3d.latents.parse_dims
        _put(user, "data", "dims", o["dims"])
    for flag, key in (
        ("pairs", "pairs"),
        ("knn_conditional", "knn_conditional"),
        ("knn_sigma", "knn_sigma"),
        ("eval_data", "eval_path"),
        ("resident", "resident"),
    ):
        _put(user, "data", key, o[flag])
    _put(user, "data", "views", o["views"])
    if o["crop_scale"] is not None:
        from ident3d.train.augment import CROP_SCALES

        _put(
            user.setdefault("data", {}), "augment", "crop_scale", list(CROP_SCALES[o["crop_scale"]])
        )
    if o["crop_size"] is not None:
        _put(user.setdefault("data", {}), "augment", "crop_size", o["crop_size"])
    if o["rotations"] is not None:
        _put(user.setdefault("data", {}), "augment", "rotations", o["rotations"])
    for flag in (
        "checkpoint_every",
        "eval_every",
        "eval_samples",
        "log_every",
        "device",
        "num_workers",
        "threads",
        "channels_last",
    ):
        _put(user, "loop", flag, o[flag])
    if o["amp"] is not None:
        _put(user, "loop", "amp", {"auto": "auto", "on": True, "off": False}[o["amp"]])
    _put(user, "loop", "compile", o["compile_"])

    if o["resume"]:
        config = {"steps": o["steps"]} if o["steps"] is not None else {}
    else:
        config = tr.resolve_config(user, source=o["config_file"])
    if o["verify_data"]:
        from ident3d.train.data_check import verify_training_data

        verify_training_data(config, o["out"], resume=o["resume"], echo=click.echo)
    try:
        tr.train(config, o["out"], resume=o["resume"], progress=o["progress"], echo=click.echo)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # a finished rank under torchrun: everything is written and the group left; skip
            # C++ static destructors, where gloo's threads can abort the process at exit
            # ("terminate called without an active exception", which torchrun counts as a
            # failed rank)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
    except tr.TrainingInterrupted as stop:
        click.echo(
            f"stopped by {signal.Signals(stop.signum).name} after step {stop.step}: checkpoint "
            f"written; continue with `ident3d train --resume --out {stop.out}`",
            err=True,
        )
        sys.exit(128 + stop.signum)
