"""``ident3d merge DIR``: write the commit records of a dataset into its ``manifest.json``.

The last step after jobs on several machines (a SLURM array, a Kubernetes Indexed Job, plain
``--shard I/N`` runs) have written one dataset directory: each job commits its shards with a
record (:mod:`ident3d.store.records`), and the merge lists every recorded shard in the manifest
in one atomic rewrite. Readers already see recorded shards before the merge; after it, the
manifest alone describes the dataset (readers of older ident3d versions need nothing else).

Merging is idempotent and safe to repeat or to run while jobs still write: records are never
removed, so a merge that races another one at worst lists a shard one merge later.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ident3d.errors import UsageError
from ident3d.store.format import MANIFEST_NAME
from ident3d.store.manifest import _write_manifest, manifest_lock, read_manifest
from ident3d.store.records import read_records


@dataclass
class MergeResult:
    """What a merge did."""

    root: Path
    added: list[int]
    listed: int
    planned: int
    missing: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.listed == self.planned

    def line(self) -> str:
        state = (
            "dataset complete"
            if self.complete
            else f"{len(self.missing)} shard(s) still missing, first {self.missing[0]}"
        )
        return (
            f"merged {len(self.added)} new shard record(s) into {self.root / 'manifest.json'}: "
            f"{self.listed} of {self.planned} shards listed [{state}]"
        )


def merge_records(root: str | os.PathLike[str], expect: Iterable[int] = ()) -> MergeResult:
    """List every recorded shard of ``root`` in ``manifest.json`` (atomically, under the
    manifest lock where locks work); a record replaces a differing entry of its index.

    ``expect``: shard indices to look up by name even when a cached directory listing of a
    shared file system does not show their record yet (the fan-out passes what its jobs
    reported)."""
    root = Path(root)
    if not (root / MANIFEST_NAME).is_file():  # before the lock, which would create a file
        raise UsageError(f"{root} is not an ident3d dataset (no {MANIFEST_NAME}).")
    with manifest_lock(root):
        manifest = read_manifest(root, records=False)
        listed = {int(s["index"]): s for s in manifest["shards"]}
        records = read_records(root, manifest, expect=expect)
        added = sorted(k for k, e in records.items() if listed.get(k) != e)
        if added:
            listed.update({k: records[k] for k in added})
            manifest["shards"] = [listed[k] for k in sorted(listed)]
            _write_manifest(root, manifest)
    num = int(manifest["num_shards"])
    return MergeResult(
        root=root,
        added=added,
        listed=len(listed),
        planned=num,
        missing=[k for k in range(num) if k not in listed],
    )
