"""Click options shared by several commands (latent model, seeds)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ident3d.latents import CONDITIONALS, LatentModel, Space, latent_model_from_options

LATENT_OPTION_NAMES = (
    "marginal",
    "marginal_scale",
    "conditional",
    "sigma",
    "p",
    "kappa",
    "lambdas",
    "ext_tol",
    "dims",
)


def latent_model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options that define the marginal and the conditional of a latent model."""
    opts = [
        click.option(
            "--marginal",
            type=click.Choice(["uniform", "normal", "laplace"]),
            default="uniform",
            show_default=True,
            help="Marginal p(z) (uniform on a box or sphere; normal/Laplace truncated on a box).",
        ),
        click.option(
            "--marginal-scale",
            type=click.FloatRange(min=0, min_open=True),
            default=1.0,
            show_default=True,
            help="Scale of a normal or Laplace marginal.",
        ),
        click.option(
            "--conditional",
            type=click.Choice(["none", *CONDITIONALS]),
            default="normal",
            show_default=True,
            help="Conditional p(z~|z) of positive pairs ('none': i.i.d. samples only).",
        ),
        click.option(
            "--sigma",
            type=click.FloatRange(min=0, min_open=True),
            default=0.1,
            show_default=True,
            help="Scale of the normal (std), Laplace (b) or generalised normal conditional.",
        ),
        click.option(
            "--p",
            "p",
            type=click.FloatRange(min=0, min_open=True),
            default=2.0,
            show_default=True,
            help="Exponent of the generalised normal conditional.",
        ),
        click.option(
            "--kappa",
            type=click.FloatRange(min=0, min_open=True),
            default=10.0,
            show_default=True,
            help="Concentration of the von Mises-Fisher conditional (sphere only).",
        ),
        click.option(
            "--lambdas",
            default="linspace",
            show_default=True,
            help="Anisotropic precisions: 'linspace' (5..25), 'bimodal' (25 x5, 5 x5) or a list.",
        ),
        click.option(
            "--ext-tol",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Sphere only: reject z+d unless | |z+d| - 1 | < EXT_TOL (AnInfoNCE uses 0.1).",
        ),
        click.option(
            "--dims",
            default=None,
            help="Factors the conditional changes (indices, ranges or names, e.g. "
            "'pos_x,pos_y,7-9'); the others are kept. Default: all.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def pop_latent_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the latent-model options from a command's kwargs and return them."""
    return {k: kwargs.pop(k) for k in LATENT_OPTION_NAMES}


def build_latent_model(space: Space, values: dict[str, Any]) -> LatentModel:
    """A :class:`LatentModel` on ``space`` from :func:`pop_latent_options` values."""
    return latent_model_from_options(space=space, **values)
