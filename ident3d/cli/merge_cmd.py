"""``ident3d merge DIR``: the last step after jobs on several machines wrote one dataset."""

from __future__ import annotations

import click


@click.command("merge")
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the merged dataset (checksums included) and exit 1 on findings.")  # fmt: skip
def merge(directory: str, verify: bool) -> int:
    """Write the commit records of DIRECTORY's shards into its manifest.json (atomically).

    Run it once after every job of a split render (SLURM array, Kubernetes Indexed Job,
    `--shard I/N` runs) has ended. Exits 1 if the dataset is still incomplete or verify finds
    a problem."""
    from ident3d import store

    result = store.merge_records(directory)
    click.echo(result.line())
    if verify:
        report = store.verify_dataset(directory)
        for line in report.lines():
            click.echo(line)
        if not report.ok:
            return 1
    return 0 if result.complete else 1
