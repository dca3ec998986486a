"""Helpers shared by the ident3d.render tests: a small mock-renderer job, reading a dataset back,
the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from ident3d import render as R
from ident3d import store
from ident3d.cli import main
from ident3d.scenes import load_preset


def _job(n: int = 10, pairs: bool = True, seed: int = 3, **kw: object) -> R.RenderJob:
    preset = load_preset("3dident")
    mapping = preset.mapping("box")
    from ident3d.latents import latent_model_from_options

    model = latent_model_from_options(space=mapping.default_space(), sigma=0.1)
    args = dict(
        preset=preset,
        mode="box",
        quality="fast",
        resolution=32,
        objects=["teapot"],
        pairs=pairs,
        n=n,
        seed=seed,
        model=model,
        renderer="mock",
    )
    args.update(kw)
    return R.RenderJob(**args)  # type: ignore[arg-type]


def _read_all(root: Path) -> store.Sample:
    ds = store.open_dataset(root)
    return ds.read_slice(0, len(ds))


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err
