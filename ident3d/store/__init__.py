"""Sharded HDF5 dataset store: manifest, writer, reader, verify, convert and export.

The on-disk format is specified (and versioned) in ``docs/format.md``; user docs in
``docs/store.md``. This module imports neither bpy nor torch.

Core API (what the renderer and the torch datasets build on)
-----------------------------------------------------------
A dataset is a directory holding ``manifest.json`` and shard files ``shard-00000.h5``, ...
(at least 5 digits; more when a dataset plans more than 100,000 shards, chosen once per
dataset so names always sort). Shard ``k`` holds samples ``[k * shard_size, min(n, (k + 1) *
shard_size))``; :func:`shard_range` gives the range.

Writing::

    manifest = create_dataset(root, kind="images", n=10_000, shard_size=1000, height=224,
                              width=224, raw_dim=10, config=resolved_config,
                              factor_table=latents.factor_table())
    for k in missing_shards(root):                 # resume: only shards not yet committed
        start, count = shard_range(manifest, k)
        with ShardWriter(root, k, start, count, "images", 224, 224, 10) as w:
            for j in range(count):                   # any order; every j exactly once
                w.write(j, image_hw3_uint8, raw_10, scene_10)
            # or w.write_batch(j0, images_nhw3, raw_n10, scene_n10)
        # leaving the block without an exception: file closed, SHA-256 computed, renamed to
        # shard-0000k.h5 and committed to the manifest (under an fcntl lock, so several
        # processes or machines can write different shards of one dataset at once).
        # An exception inside the block deletes the temporary file; nothing is committed.

``create_dataset`` reuses an existing manifest with the same plan and config (resume, several
machines); a different one raises :class:`UsageError` unless ``overwrite=True`` (which deletes
the old shards). Pairs: ``kind="pairs"``, images ``(2, H, W, 3)``, raw ``(2, raw_dim)``, scene
``(2, 10)``. Datasets with classes: ``has_class=True, class_names=[...]`` and ``cls=`` per sample.

Reading::

    ds = open_dataset(root)          # refuses an incomplete dataset unless allow_incomplete=True
    len(ds), ds.kind, ds.height, ds.width, ds.raw_dim, ds.class_names, ds.manifest
    ds.mean, ds.std                  # per channel (R, G, B), in [0, 1] units (ToTensor scale)
    s = ds.read(i)                   # Sample(images, raw, scene, cls); images uint8 (H, W, 3)
    ds.read_into(i, buf)             # only the images, into a preallocated uint8 buffer
                                     # or (2, H, W, 3); raw float32; scene float32; cls int|None
    b = ds.read_slice(a, b)          # the same fields batched along axis 0 (contiguous range);
                                     # out=buf fills a preallocated uint8 image buffer
    ds.shards()                      # [ShardInfo(index, file, path, start, count, sha256, ...)]
    ds.raw_latents(), ds.scene_latents(), ds.classes()   # whole tables, (N, ...) numpy

A :class:`Dataset` is cheap to build and to pickle: HDF5 files are opened lazily, per process
(the opener's pid is kept; a forked child re-opens), and never pickled. Latents and classes of
a shard are loaded into memory when the shard is first touched; images are read one sample
(one HDF5 chunk) at a time or as one contiguous slice, never with index lists (h5py fancy
indexing is quadratic).

Other entry points: :func:`commit_shard`, :func:`missing_shards`, :func:`is_complete`,
:func:`read_manifest`, :func:`shard_range`, :func:`verify_dataset` (``ident3d verify``),
:func:`check_shard_files` (the cheap check of ``ident3d info``),
:func:`describe_dataset` (``ident3d info``), :func:`convert_original` (``ident3d convert``),
:func:`export_original` (``ident3d export``), :func:`export_hf` and :func:`export_webdataset`
(``ident3d export --format hf | webdataset``), :func:`generation_command`, :func:`index_digits`, and the original-layout
readers :func:`scan_original_layout`, :func:`decode_png` and :func:`read_class_names` (a split
folder's ``class_names.json``, Causal3DIdent's names without one).

The package holds one concept per module: :mod:`~ident3d.store.format` (constants and shared
helpers), :mod:`~ident3d.store.manifest`, :mod:`~ident3d.store.writer`,
:mod:`~ident3d.store.reader`, :mod:`~ident3d.store.verify`, :mod:`~ident3d.store.describe`,
:mod:`~ident3d.store.layouts` (the original layouts, one module each),
:mod:`~ident3d.store.convert`, :mod:`~ident3d.store.export`, the ecosystem exports
:mod:`~ident3d.store.export_hf`, :mod:`~ident3d.store.export_webdataset` (on
:mod:`~ident3d.store.export_target` and :mod:`~ident3d.store.export_card`),
:mod:`~ident3d.store.records` (per-shard commit records, lock-free commits) and
:mod:`~ident3d.store.merge` (``ident3d merge``: records into the manifest). Everything public is
re-exported here.
"""

from ident3d.errors import DataError, UsageError
from ident3d.store.convert import convert_original
from ident3d.store.describe import describe_dataset
from ident3d.store.export import export_original, index_digits
from ident3d.store.export_card import generation_command
from ident3d.store.export_hf import export_hf
from ident3d.store.export_webdataset import export_webdataset
from ident3d.store.format import (
    CAUSAL3DIDENT_CLASSES,
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    DEFAULT_SHARD_SIZE,
    FORMAT_NAME,
    FORMAT_VERSION,
    KINDS,
    LOCK_NAME,
    MANIFEST_NAME,
    MIN_SHARD_DIGITS,
    SCENE_DIM,
    sha256_file,
    shard_digits,
    shard_file_name,
    shard_range,
)
from ident3d.store.layouts import decode_png, read_class_names, scan_original_layout
from ident3d.store.manifest import (
    commit_shard,
    create_dataset,
    is_complete,
    manifest_lock,
    missing_shards,
    read_manifest,
)
from ident3d.store.mapping import MappedImages, map_images
from ident3d.store.merge import MergeResult, merge_records
from ident3d.store.multimodal import MultimodalShardWriter, is_multimodal, read_text
from ident3d.store.reader import Dataset, Sample, ShardInfo, open_dataset
from ident3d.store.records import RECORDS_DIR, deferred_merge, read_records, write_record
from ident3d.store.verify import VerifyReport, check_shard_files, verify_dataset
from ident3d.store.writer import ShardWriter

__all__ = [
    "CAUSAL3DIDENT_CLASSES",
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "DEFAULT_SHARD_SIZE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "KINDS",
    "LOCK_NAME",
    "MANIFEST_NAME",
    "MIN_SHARD_DIGITS",
    "RECORDS_DIR",
    "SCENE_DIM",
    "DataError",
    "Dataset",
    "MappedImages",
    "MergeResult",
    "MultimodalShardWriter",
    "Sample",
    "ShardInfo",
    "ShardWriter",
    "UsageError",
    "VerifyReport",
    "check_shard_files",
    "commit_shard",
    "convert_original",
    "create_dataset",
    "decode_png",
    "deferred_merge",
    "describe_dataset",
    "export_hf",
    "export_original",
    "export_webdataset",
    "generation_command",
    "index_digits",
    "is_complete",
    "is_multimodal",
    "manifest_lock",
    "map_images",
    "merge_records",
    "missing_shards",
    "open_dataset",
    "read_class_names",
    "read_manifest",
    "read_records",
    "read_text",
    "scan_original_layout",
    "sha256_file",
    "shard_digits",
    "shard_file_name",
    "shard_range",
    "verify_dataset",
    "write_record",
]
