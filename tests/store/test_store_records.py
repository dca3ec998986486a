"""Per-shard commit records (ident3d.store.records) and lock-free commits: readers see
recorded shards before any merge, a lost manifest update loses nothing, two processes
committing into one dataset without a working lock lose nothing."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from store_helpers import H, W, _data, _make

from ident3d import store
from ident3d.store import manifest as manifest_mod
from ident3d.store.format import UnsafeDatasetError, remove_stale_temp_files


def _raw_indices(root: Path) -> list[int]:
    return sorted(
        int(e["index"]) for e in json.loads((root / "manifest.json").read_text())["shards"]
    )


def _write_shard(root: Path, k: int, images: np.ndarray, raw: np.ndarray, scene: np.ndarray):
    m = store.read_manifest(root, records=False)
    start, count = store.shard_range(m, k)
    with store.ShardWriter(root, k, start, count, "images", H, W, 10) as w:
        w.write_batch(0, images[start : start + count], raw[start : start + count],
                      scene[start : start + count])  # fmt: skip


def test_every_commit_writes_its_record_equal_to_the_manifest_entry(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make(root, n=25, shard_size=10)
    entries = {e["index"]: e for e in json.loads((root / "manifest.json").read_text())["shards"]}
    records = store.read_records(root, store.read_manifest(root))
    assert sorted(records) == [0, 1, 2] and records == entries
    assert sorted(os.listdir(root / store.RECORDS_DIR)) == [
        "shard-00000.json", "shard-00001.json", "shard-00002.json"]  # fmt: skip
    report = store.verify_dataset(root)
    assert report.ok and not report.warnings, report.lines()


def test_deferred_commits_count_for_readers_before_the_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from store_helpers import _cli

    root = tmp_path / "ds"
    images, raw, scene = _data(25)
    store.create_dataset(root, "images", 25, 10, H, W, 10, {"preset": "test"})
    before = (root / "manifest.json").read_bytes()
    with store.deferred_merge():
        for k in (2, 0):
            _write_shard(root, k, images, raw, scene)
    assert (root / "manifest.json").read_bytes() == before  # not touched: no lock was needed
    assert store.missing_shards(root) == [1]  # resume sees the recorded shards
    report = store.verify_dataset(root)
    assert not report.problems and report.missing == [1]
    assert any("not yet listed in manifest.json" in w for w in report.warnings)
    code, out, _ = _cli(["merge", str(root)], capsys)
    assert code == 1 and "2 of 3 shards listed" in out and "missing" in out
    assert _raw_indices(root) == [0, 2]
    with store.deferred_merge():
        _write_shard(root, 1, images, raw, scene)
    code, out, _ = _cli(["merge", str(root)], capsys)
    assert code == 0 and "merged 1 new shard record(s)" in out and "dataset complete" in out
    assert "OK: 3 of 3 shards good" in out
    assert _raw_indices(root) == [0, 1, 2]
    ds = store.open_dataset(root)
    np.testing.assert_array_equal(ds.read_slice(0, 25).images, images)
    again = store.merge_records(root)
    assert again.added == [] and again.complete  # idempotent


def test_a_lost_manifest_update_loses_no_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a working lock, two commits can interleave: A reads the manifest, B commits, A
    writes its stale copy back. The manifest file then misses B's shard; the record keeps it."""
    root = tmp_path / "ds"
    images, raw, scene = _data(20)
    store.create_dataset(root, "images", 20, 10, H, W, 10, {"preset": "test"})
    monkeypatch.setattr(manifest_mod, "manifest_lock", lambda root: contextlib.nullcontext())
    real_read = manifest_mod.read_manifest
    state = {"interleaved": False}

    def read_then_let_b_commit(root_: object, records: bool = True) -> dict:
        m = real_read(root_, records=records)
        if not records and not state["interleaved"] and _in_replace_entry():
            state["interleaved"] = True  # A holds its copy; B commits in between
            _write_shard(root, 1, images, raw, scene)
        return m

    monkeypatch.setattr(manifest_mod, "read_manifest", read_then_let_b_commit)
    _write_shard(root, 0, images, raw, scene)
    assert state["interleaved"]
    assert _raw_indices(root) == [0]  # B's manifest update was lost ...
    monkeypatch.setattr(manifest_mod, "read_manifest", real_read)
    assert store.missing_shards(root) == []  # ... but its shard still counts
    assert store.merge_records(root).added == [1]
    assert _raw_indices(root) == [0, 1]
    report = store.verify_dataset(root)
    assert report.ok and not report.warnings and not report.missing


def _in_replace_entry() -> bool:
    import inspect

    return any(f.function == "_replace_entry" for f in inspect.stack()[1:6])


_TWO_WRITERS = textwrap.dedent(
    """
    import contextlib, errno, sys
    import numpy as np
    from ident3d import store
    from ident3d.store import manifest
    mode, root, parity = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "nolock":  # both writers enter the 'locked' section at once
        manifest.manifest_lock = lambda root: contextlib.nullcontext()
    else:  # lockf fails as on NFS without a lock daemon
        def lockf(*a, **k):
            raise OSError(errno.ENOLCK, "No locks available")
        manifest.fcntl.lockf = lockf
    m = store.read_manifest(root)
    for k in range(parity, m["num_shards"], 2):
        start, count = store.shard_range(m, k)
        rng = np.random.default_rng(k)
        with store.ShardWriter(root, k, start, count, "images", 12, 10, 10) as w:
            w.write_batch(0, rng.integers(0, 256, (count, 12, 10, 3), dtype=np.uint8),
                          rng.uniform(-1, 1, (count, 10)), rng.normal(size=(count, 10)))
    """
)


@pytest.mark.parametrize("mode", ["nolock", "enolck"])
def test_two_processes_committing_without_a_working_lock_lose_nothing(
    tmp_path: Path, mode: str
) -> None:
    root = tmp_path / "ds"
    n, size = 120, 3  # 40 shards, 20 per writer, committed as fast as they come
    store.create_dataset(root, "images", n, size, H, W, 10, {"preset": "test"})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _TWO_WRITERS, mode, str(root), str(p)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in (0, 1)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read() if p.stderr else ""
    assert store.missing_shards(root) == []  # every shard counts, merged or not
    result = store.merge_records(root)
    assert result.complete and _raw_indices(root) == list(range(40))
    report = store.verify_dataset(root)
    assert report.ok and not report.warnings, report.lines()
    ds = store.open_dataset(root)
    for k in range(40):
        rng = np.random.default_rng(k)
        expect = rng.integers(0, 256, (size, 12, 10, 3), dtype=np.uint8)
        np.testing.assert_array_equal(ds.read_slice(k * size, (k + 1) * size).images, expect)


def test_commits_go_on_when_lockf_reports_no_locks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(manifest_mod.fcntl, "lockf", no_locks)
    root = tmp_path / "ds"
    _make(root, n=25, shard_size=10)
    assert _raw_indices(root) == [0, 1, 2] and store.verify_dataset(root).ok


def test_records_that_lead_outside_the_dataset_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make(root, n=25, shard_size=10)
    rec = root / store.RECORDS_DIR / "shard-00001.json"
    entry = json.loads(rec.read_text())
    store.merge_records(root)
    m = json.loads((root / "manifest.json").read_text())
    m["shards"] = [e for e in m["shards"] if e["index"] != 1]
    (root / "manifest.json").write_text(json.dumps(m))
    rec.write_text(json.dumps({**entry, "file": "../../etc/passwd"}))
    with pytest.raises(UnsafeDatasetError, match="only shard-00001.h5 is allowed"):
        store.read_manifest(root)
    rec.write_text(json.dumps({**entry, "index": 2, "file": "shard-00002.h5", "start": 20}))
    with pytest.raises(UnsafeDatasetError, match="not shard 1"):
        store.open_dataset(root)
    rec.unlink()
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps(entry))
    rec.symlink_to(outside)
    with pytest.raises(UnsafeDatasetError, match="symbolic link"):
        store.read_manifest(root)
    rec.unlink()
    rec.write_text(json.dumps({**entry, "count": 3}))
    with pytest.raises(store.DataError, match="the plan says from 10 count 10"):
        store.read_manifest(root)


def test_a_new_or_overwritten_dataset_drops_old_records_and_stale_record_temps(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ds"
    _make(root, n=25, shard_size=10)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = root / store.RECORDS_DIR / f".shard-00004.json.tmp-{dead.pid}-abcd"
    tmp.write_text("{half")
    assert tmp in remove_stale_temp_files(root) and not tmp.exists()
    store.create_dataset(root, "images", 25, 10, H, W, 10, {"preset": "other"}, overwrite=True)
    assert not (root / store.RECORDS_DIR).exists() and store.missing_shards(root) == [0, 1, 2]
    (root / "manifest.json").unlink()
    _make(root, n=25, shard_size=10)
    assert store.missing_shards(root) == []
    (root / "manifest.json").unlink()  # a manifest deleted by hand: records must not leak in
    for p in root.glob("shard-*.h5"):
        p.unlink()
    store.create_dataset(root, "images", 25, 10, H, W, 10, {"preset": "test", "seed": 1})
    assert store.missing_shards(root) == [0, 1, 2]


def test_merge_of_a_folder_without_a_dataset_is_one_line_and_writes_nothing(tmp_path, capsys):
    from ident3d.cli import main

    empty = tmp_path / "empty"
    empty.mkdir()
    for target in (tmp_path / "missing", empty):
        with pytest.raises(SystemExit) as exc:
            main(["merge", str(target)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.count("\n") == 1, err
        assert "is not an ident3d dataset (no manifest.json)" in err
    assert not (tmp_path / "missing").exists() and not list(empty.iterdir())
