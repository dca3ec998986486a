"""The ``ident3d`` command line: a thin click layer over the library.

Each sub-command lives in its own module of this package and is imported only when it is
run (so ``ident3d --help`` does not import torch or bpy). Errors the user can fix
(:class:`ident3d.errors.UsageError`, click's own usage errors, a missing file) print one line
and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

import click

from ident3d import __version__
from ident3d.errors import UsageError

# command name -> (module, attribute, one-line help). Add new commands here.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "latents": ("ident3d.cli.latents_cmd", "latents", "Sample latent pairs and save them."),
    "render": ("ident3d.cli.render_cmd", "render", "Render a dataset of images or pairs."),
    "traverse": ("ident3d.cli.render_cmd", "traverse", "Render a latent traversal grid."),
    "info": ("ident3d.cli.store_cmd", "info", "Summarise a dataset."),
    "verify": ("ident3d.cli.store_cmd", "verify", "Check a dataset against its manifest."),
    "merge": ("ident3d.cli.merge_cmd", "merge", "List the shards jobs committed in the manifest."),
    "convert": ("ident3d.cli.store_cmd", "convert", "Pack an original-layout dataset."),
    "export": ("ident3d.cli.store_cmd", "export", "Write a dataset in the original layout."),
    "train": ("ident3d.cli.train_cmd", "train", "Train a contrastive encoder."),
    "eval": ("ident3d.cli.eval_cmd", "eval_", "Score how well an encoder identifies latents."),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name in COMMANDS if self._available(name)]

    @staticmethod
    def _available(name: str) -> bool:
        module = COMMANDS[name][0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS or not self._available(cmd_name):
            return None
        module, attr, _ = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ident3d")
def cli() -> None:
    """ident3d: render, store, load, train on and score 3DIdent-style datasets.

    Run `ident3d COMMAND --help` for each command's options.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit status 2."""
    try:
        rv = cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:  # bad option values, missing arguments, ...
        msg = exc.format_message().replace("\n", " ")
        click.echo(f"error: {msg}", err=True)
        sys.exit(2)
    except UsageError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        click.echo(f"error: {exc.strerror or exc}: {exc.filename}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
