"""``ident3d info | verify | convert | export``: the dataset store on the command line.

Thin wrappers over :mod:`ident3d.store`; see ``docs/store.md``.
"""

from __future__ import annotations

import sys

import click

from ident3d import store
from ident3d.errors import UsageError


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--knn-diagnostics", is_flag=True,
              help="Also draw 3DIdent-style nearest-neighbour pairs and print how far the "
                   "retrieved pairs are from the sampled ones (ident3d.data.knn_diagnostics).")  # fmt: skip
@click.option("--knn-sigma", type=click.FloatRange(min=0, min_open=True), default=0.1,
              show_default=True, help="Scale of the normal conditional for --knn-diagnostics.")  # fmt: skip
def info(directory: str, knn_diagnostics: bool, knn_sigma: float) -> int:
    """Summarise the dataset in DIRECTORY: kind, size, shards, how it was made.

    Exits 1 when listed shard files are missing, truncated or not HDF5 (a cheap check, no
    checksums: run `ident3d verify` for those)."""
    click.echo(store.describe_dataset(directory))
    problems = store.check_shard_files(directory)
    if problems:
        click.echo(
            f"FAILED: {len({f for f, _ in problems})} listed shard files are missing or "
            f"unreadable; run `ident3d verify {directory}`"
        )
        return 1
    if knn_diagnostics:
        from ident3d import data

        click.echo(data.format_knn_diagnostics(data.knn_diagnostics(directory, sigma=knn_sigma)))
    return 0


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.option("--quick", is_flag=True, help="Skip the SHA-256 checksums (structure only).")
def verify(directory: str, quick: bool) -> int:
    """Check DIRECTORY against its manifest; exit 1 naming each bad shard, 0 when all is well."""
    report = store.verify_dataset(directory, quick=quick)
    for line in report.lines():
        click.echo(line)
    return 0 if report.ok else 1


@click.command()
@click.argument("src", type=click.Path(file_okay=False, path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="PNG decoding processes [default: all cores].")  # fmt: skip
@click.option("--overwrite", is_flag=True,
              help="Replace a dataset already in DST (everything of the old conversion goes).")  # fmt: skip
@click.option("--resume", is_flag=True,
              help="Continue an interrupted conversion into DST: committed shards are kept.")  # fmt: skip
@click.option("--compression", type=click.Choice(store.COMPRESSIONS),
              default=store.DEFAULT_COMPRESSION, show_default=True)  # fmt: skip
@click.option("--shard-size", type=click.IntRange(min=1), default=store.DEFAULT_SHARD_SIZE,
              show_default=True, help="Samples per shard file.")  # fmt: skip
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Causal3DIdent: which of trainset/ and testset/ (when SRC holds both); "
                   "Multimodal3DIdent: which of train/, val/, test/.")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def convert(
    src: str,
    dst: str,
    workers: int | None,
    overwrite: bool,
    compression: str,
    shard_size: int,
    split: str | None,
    no_progress: bool,
    resume: bool,
) -> None:
    """Pack an original 3DIdent (or Causal3DIdent, or Multimodal3DIdent) folder SRC into a
    dataset at DST (Multimodal3DIdent: a split folder, or the root with --split)."""
    from ident3d.store.layouts.multimodal3dident import find_multimodal_split

    mm = find_multimodal_split(src, split)
    if mm is not None:  # image/text pairs: ident3d.store.layouts.multimodal3dident
        from ident3d.store.layouts.multimodal3dident import convert_multimodal

        if resume:
            raise UsageError("--resume is not available for Multimodal3DIdent folders.")
        out = convert_multimodal(mm, dst, overwrite=overwrite, compression=compression,
                                 shard_size=shard_size)  # fmt: skip
        click.echo(f"wrote {len(store.open_dataset(out)):,} image/text pairs to {out}")
        return
    out = store.convert_original(
        src,
        dst,
        workers=workers,
        overwrite=overwrite,
        compression=compression,
        shard_size=shard_size,
        split=split,
        progress=not no_progress and sys.stderr.isatty(),
        resume=resume,
    )
    ds = store.open_dataset(out)
    click.echo(f"wrote {len(ds):,} images in {ds.num_shards} shards to {out}")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=str))
@click.argument("dst", type=click.Path(path_type=str))
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None,
              help="PNG encoding processes [default: all cores].")  # fmt: skip
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in DST.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Image/text datasets: write DST/<split>/ (default train).")  # fmt: skip
@click.option(
    "--layout",
    type=click.Choice(["auto", "3dident", "3didentbox", "multimodal3dident"]),
    default="auto",
    show_default=True,
    help="Folder layout: 3dident (Causal3DIdent's per-class files with classes, view0/view1 "
    "for pairs) or 3didentbox (samples/m1|m2, factors/m1|m2; pairs only). auto: 3didentbox "
    "for pairs rendered with the 3didentbox preset, multimodal3dident for image/text "
    "datasets (DST/<split>/), else 3dident.",
)
@click.option("--format", "fmt", type=click.Choice(["original", "hf", "webdataset"]),
              default="original", show_default=True,
              help="original: the folder layout of --layout; hf: Parquet shards for Hugging "
                   "Face datasets; webdataset: tar shards for the webdataset library.")  # fmt: skip
@click.option("--shard-size", type=click.IntRange(min=1), default=None,
              help="hf/webdataset: samples per output file [default: the store's].")  # fmt: skip
def export(
    directory: str,
    dst: str,
    workers: int | None,
    overwrite: bool,
    no_progress: bool,
    split: str | None,
    layout: str = "auto",
    fmt: str = "original",
    shard_size: int | None = None,
) -> None:
    """Write the dataset in DIRECTORY to DST: in the original folder layout (default; see
    --layout; image/text datasets: the Multimodal3DIdent layout, DST/<split>/), as Hugging Face
    Parquet shards (--format hf) or as WebDataset tar shards (--format webdataset), each of the
    last two with a dataset card (README.md)."""
    from ident3d.store.multimodal import is_multimodal

    mm = is_multimodal(store.read_manifest(directory))
    if mm != (layout in ("auto", "multimodal3dident")) and (mm or layout == "multimodal3dident"):
        raise UsageError(
            f"--layout {layout}: {directory} is "
            + ("an image/text dataset (layout multimodal3dident)." if mm
               else "not an image/text dataset (it holds no captions).")
        )  # fmt: skip
    if mm:
        from ident3d.store.layouts.multimodal3dident import export_multimodal

        if fmt != "original" or shard_size is not None:
            raise UsageError("--format hf/webdataset and --shard-size do not take image/text "
                             "datasets yet: export them in the Multimodal3DIdent layout.")  # fmt: skip

        out = export_multimodal(directory, dst, split=split or "train", overwrite=overwrite)
        click.echo(f"exported {directory} to {out}")
        return
    if split is not None:
        raise UsageError("--split applies to image/text datasets only.")
    progress = not no_progress and sys.stderr.isatty()
    if fmt == "original":
        if shard_size is not None:
            raise store.UsageError("--shard-size goes with --format hf or webdataset")
        out = store.export_original(
            directory,
            dst,
            workers=workers,
            overwrite=overwrite,
            progress=progress,
            layout=layout,
        )
    else:
        if layout != "auto":
            raise store.UsageError("--layout goes with --format original")
        fn = store.export_hf if fmt == "hf" else store.export_webdataset
        out = fn(
            directory,
            dst,
            shard_size=shard_size,
            workers=workers,
            overwrite=overwrite,
            progress=progress,
        )
    click.echo(f"exported {directory} to {out}" + ("" if fmt == "original" else f" ({fmt})"))
