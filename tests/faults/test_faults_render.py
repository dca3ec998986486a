"""Rendering under faults (issue 17): a full disk, SIGTERM/SIGINT, SIGKILL of the whole process
group, orphaned temporary files, /dev/shm hand-off folders, bad input, two renders at once.

The fast part uses the mock renderer (``--renderer mock``) in real subprocesses; the Blender
part is marked ``slow`` and ``bpy``. Every interrupted run is finished with ``--resume`` and
compared, image for image and latent for latent, with an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ident3d import store
from ident3d.cli import main
from ident3d.render.workers import clean_stale_frame_dirs
from ident3d.store.format import _host_tag, remove_stale_temp_files, stale_temp_files

N, SHARD = 1200, 100
ARGS = ["--renderer", "mock", "--n", str(N), "--shard-size", str(SHARD), "--resolution", "32",
        "--mode", "box", "--quality", "fast", "--seed", "5", "--quiet"]  # fmt: skip


def _cmd(out: Path, *extra: str, workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "ident3d", "render", "--out", str(out), *ARGS,
            "--workers", str(workers), *extra]  # fmt: skip


def _popen(out: Path, *extra: str, workers: int = 2) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _cmd(out, *extra, workers=workers),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(out: Path, *extra: str, workers: int = 2) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(out, *extra, workers=workers), capture_output=True, text=True, timeout=300
    )


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (a render started with start_new_session=True and
    every worker it spawned, even after they are reparented)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def _wait_gone(sid: int, limit: float = 30.0) -> list[int]:
    deadline = time.monotonic() + limit
    while (left := _session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _committed(out: Path) -> int:
    try:
        return len(json.loads((out / store.MANIFEST_NAME).read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def _wait_committed(proc: subprocess.Popen[str], out: Path, k: int) -> None:
    deadline = time.monotonic() + 120
    while _committed(out) < k:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)


def _arrays(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ds = store.open_dataset(root)
    s = ds.read_slice(0, len(ds))
    return s.images, s.raw, s.scene


def _same(a: Path, b: Path) -> None:
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if store.format._TMP_MARK in p.name)


def _clean(root: Path) -> None:
    report = store.verify_dataset(root)
    assert report.ok and not report.missing and not report.warnings, report
    assert not _leftovers(root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ds"
    r = _run(out)
    assert r.returncode == 0, r.stderr
    return out


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------------- 1: disk full


def test_disk_full_injected_is_one_line_and_resumes(
    tmp_path: Path,
    reference: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import h5py

    out = tmp_path / "ds"
    real = h5py.Dataset.__setitem__
    calls = {"n": 0}

    def full(self: h5py.Dataset, key: object, value: object) -> None:
        calls["n"] += 1
        if calls["n"] > 40:  # after a few shards
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    with pytest.raises(SystemExit) as exc:
        main(["render", "--out", str(out), *ARGS, "--workers", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: disk full") and str(out) in err[0]
    assert not _leftovers(out)
    assert 0 < _committed(out) < N // SHARD
    assert not store.verify_dataset(out).problems
    monkeypatch.setattr(h5py.Dataset, "__setitem__", real)
    with pytest.raises(SystemExit) as exc:
        main(["render", "--out", str(out), *ARGS, "--workers", "1", "--resume"])
    assert exc.value.code == 0
    _same(out, reference)
    _clean(out)


def test_disk_full_on_a_real_small_tmpfs(tmp_path: Path, reference: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        out = mnt / "ds"
        proc = _popen(out, workers=1)
        _wait_committed(proc, out, 2)
        filler = mnt / "filler"  # another program fills the disk during the render
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\1" * 65536)
        os.close(fd)
        _, stderr = proc.communicate(timeout=120)
        err = stderr.strip().splitlines()
        assert proc.returncode == 2, stderr  # not 139 (SIGSEGV)
        assert len(err) == 1 and err[0].startswith("error: disk full") and str(out) in err[0]
        assert not _leftovers(out)
        assert not store.verify_dataset(out).problems
        filler.unlink()
        r3 = _run(out, "--resume")
        assert r3.returncode == 0, r3.stderr
        _same(out, reference)
        _clean(out)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# ---------------------------------------------------------------- 2: SIGTERM and SIGINT


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_workers_and_resumes(tmp_path: Path, reference: Path, sig: int) -> None:
    out = tmp_path / "ds"
    proc = _popen(out)
    _wait_committed(proc, out, 2)
    workers = [p for p in _session_pids(proc.pid) if p != proc.pid]
    assert workers, "the render should have worker processes"
    os.kill(proc.pid, sig)  # the main process only, as a batch system's time limit does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stopped by"), stderr
    assert "--resume" in lines[0]
    assert _wait_gone(proc.pid) == []
    assert not set(workers) & set(_session_pids(proc.pid))
    assert not store.verify_dataset(out).problems and not _leftovers(out)
    r = _run(out, "--resume")
    assert r.returncode == 0, r.stderr
    _same(out, reference)
    _clean(out)


def test_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    proc = _popen(out)
    _wait_committed(proc, out, 1)
    workers = [p for p in _session_pids(proc.pid) if p != proc.pid]
    os.kill(proc.pid, signal.SIGKILL)  # the parent alone: no handler can run
    proc.communicate(timeout=60)
    assert _wait_gone(proc.pid) == [], "orphaned workers survived their parent"
    assert workers


# ------------------------------------------------------------- 3: orphaned temporary files


def test_stale_temp_files_dead_live_and_other_host(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        names = {
            "dead": f".shard-00003.h5.tmp-{dead}-0a1b2c3d-{_host_tag()}",
            "dead_old_style": f".shard-00004.h5.tmp-{dead}-0a1b2c3d",
            "dead_manifest": f".manifest.json.tmp-{dead}-deadbeef",
            "live": f".shard-00005.h5.tmp-{live.pid}-0a1b2c3d-{_host_tag()}",
            "other_host": f".shard-00006.h5.tmp-{dead}-0a1b2c3d-ffffffff",
            "not_ours": "notes.txt",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"x")
        if _host_tag() == "ffffffff":  # pragma: no cover
            pytest.skip("this host's tag collides with the test's 'other host'")
        stale = {p.name for p in stale_temp_files(tmp_path)}
        assert stale == {names["dead"], names["dead_old_style"], names["dead_manifest"]}
        removed = {p.name for p in remove_stale_temp_files(tmp_path)}
        assert removed == stale
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {names["live"], names["other_host"], names["not_ours"]}
    finally:
        live.kill()
        live.wait()


def test_resume_removes_the_temp_files_of_dead_writers_only(
    tmp_path: Path, reference: Path
) -> None:
    out = tmp_path / "ds"
    proc = _popen(out)
    _wait_committed(proc, out, 3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert _wait_gone(proc.pid) == []
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead_tmp = out / f".shard-00009.h5.tmp-{_dead_pid()}-00000000-{_host_tag()}"
        live_tmp = out / f".shard-00011.h5.tmp-{live.pid}-00000000-{_host_tag()}"
        dead_tmp.write_bytes(b"half a shard")
        live_tmp.write_bytes(b"being written")
        warnings = store.verify_dataset(out).warnings  # verify reports them
        assert any(dead_tmp.name in w and "writer that is gone" in w for w in warnings)
        assert any(live_tmp.name in w and "in progress" in w for w in warnings)
        r = _run(out, "--resume")
        assert r.returncode == 0, r.stderr
        assert not dead_tmp.exists()
        assert live_tmp.exists()  # never a live writer's file
        live_tmp.unlink()
    finally:
        live.kill()
        live.wait()
    _same(out, reference)
    _clean(out)


# ------------------------------------------------------------------ 4: /dev/shm folders


def test_clean_stale_frame_dirs_removes_dead_pids_only(tmp_path: Path) -> None:
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        for name in (f"ident3d-frame-{dead}-abc", f"ident3d-frame-{live.pid}-abc",
                     "ident3d-frame-q1w2e3r4", f"other-{dead}-x"):  # fmt: skip
            (tmp_path / name).mkdir()
            (tmp_path / name / "frame.bmp").write_bytes(b"x")
        removed = clean_stale_frame_dirs(str(tmp_path))
        assert [Path(p).name for p in removed] == [f"ident3d-frame-{dead}-abc"]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f"ident3d-frame-{live.pid}-abc", "ident3d-frame-q1w2e3r4", f"other-{dead}-x"]
        )
        assert clean_stale_frame_dirs(str(tmp_path), pids=[live.pid]) == []
    finally:
        live.kill()
        live.wait()


def _shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:  # pragma: no cover
        return set()


def test_no_shm_left_after_a_normal_a_failed_and_a_stopped_mock_run(tmp_path: Path) -> None:
    before = _shm()
    assert _run(tmp_path / "a").returncode == 0
    assert _run(tmp_path / "b", "--n", "1").returncode == 0
    proc = _popen(tmp_path / "c")
    _wait_committed(proc, tmp_path / "c", 1)
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=120)
    assert _wait_gone(proc.pid) == []
    new = {n for n in _shm() - before if n.startswith(("ident3d-", "sem.mp", "mp-"))}
    assert not new, new


# --------------------------------------------------------------------------- 5 - 9: input


def test_latents_outside_the_space_are_refused_unless_allowed(tmp_path: Path) -> None:
    z = np.zeros((6, 10))
    z[3, 2] = 5.0
    f = tmp_path / "z.npy"
    np.save(f, z)
    args = ["render", "--renderer", "mock", "--latents", str(f), "--resolution", "32",
            "--mode", "box", "--quality", "fast", "--quiet", "--workers", "1"]  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "ident3d", *args, "--out", str(tmp_path / "a")],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.startswith("error:") and "row 3" in r.stderr and '"box"' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists()
    r = subprocess.run([sys.executable, "-m", "ident3d", *args, "--out", str(tmp_path / "b"),
                        "--allow-outside-space"], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = store.read_manifest(tmp_path / "b")["config"]
    assert cfg["latents_file"]["allow_outside_space"] is True


def test_out_holding_other_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    r = _run(out)
    assert r.returncode == 2 and r.stderr.startswith("error: --out")
    assert "notes.txt" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_a_dataset_of_the_same_config(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "ds"
    assert _run(out).returncode == 0
    (out / "shard-00000.h5").write_bytes(b"not the committed shard")  # proof of replacement
    assert store.verify_dataset(out).problems
    r = _run(out, "--overwrite")  # the same config: it used to say "pass --resume ..."
    assert r.returncode == 0, r.stderr
    _same(out, reference)
    _clean(out)


@pytest.mark.parametrize(
    "argv",
    [
        ["render", "--renderer", "mock", "--n", str(10**15), "--quiet"],
        ["latents", "--n", str(10**10)],
    ],
)
def test_huge_sizes_are_refused_before_anything_is_written(tmp_path: Path, argv: list[str]) -> None:
    out = tmp_path / ("ds" if argv[0] == "render" else "z.npz")
    r = subprocess.run([sys.executable, "-m", "ident3d", *argv, "--out", str(out)],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: --n") and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_second_render_on_the_same_out_is_refused(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "ds"
    first = _popen(out)
    _wait_committed(first, out, 1)
    second = _run(out, "--resume")
    assert second.returncode == 2, second.stderr
    assert "another render is writing" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    _same(out, reference)
    _clean(out)


def test_disjoint_shard_groups_render_together(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "ds"
    a, b = _popen(out, "--shard", "0/2"), _popen(out, "--shard", "1/2")
    for p in (a, b):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    _same(out, reference)
    _clean(out)


# --------------------------------------------------------------- 10: SIGKILL of the group


def _kill_and_resume(out: Path, reference: Path, after: int, delay: float) -> None:
    proc = _popen(out)
    _wait_committed(proc, out, after)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert _wait_gone(proc.pid) == []
    _nothing_half_written_looks_complete(out)
    r = _run(out, "--resume")
    assert r.returncode == 0, r.stderr
    _same(out, reference)
    _clean(out)


def _nothing_half_written_looks_complete(out: Path) -> None:
    """Right after a kill: every file with a shard's name is a committed, intact shard (a
    shard being written lives under a temporary name until it is complete and renamed)."""
    on_disk = {p.name for p in out.glob("shard-*.h5")} if out.exists() else set()
    if not (out / "manifest.json").exists():  # killed before the dataset was created
        assert not on_disk, f"shard files without a manifest: {on_disk}"
        return
    manifest = json.loads((out / "manifest.json").read_text())
    committed = {s["file"] for s in manifest["shards"]}
    assert on_disk == committed, f"uncommitted files with shard names: {on_disk - committed}"
    assert not store.verify_dataset(out).problems


KILLS_FAST = [(1, 0.0), (4, 0.013), (7, 0.031)]


@pytest.mark.parametrize(("after", "delay"), KILLS_FAST)
def test_sigkill_of_the_process_group_then_resume(
    tmp_path: Path, reference: Path, after: int, delay: float
) -> None:
    _kill_and_resume(tmp_path / "ds", reference, after, delay)


def _seeded_kills(n: int) -> Iterator[tuple[int, float]]:
    rng = random.Random(17)
    for _ in range(n):
        yield rng.randint(0, N // SHARD - 1), rng.uniform(0.0, 0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("after", "delay"), list(_seeded_kills(20)))
def test_sigkill_at_seeded_random_moments(
    tmp_path: Path, reference: Path, after: int, delay: float
) -> None:
    _kill_and_resume(tmp_path / "ds", reference, after, delay)


# --------------------------------------------------------------------------------- Blender

BLENDER = ["--n", "6", "--shard-size", "2", "--resolution", "32", "--quality", "fast",
           "--mode", "box", "--seed", "5", "--quiet", "--workers", "2"]  # fmt: skip


def _blender(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ident3d", "render", "--out", str(out), *BLENDER, *extra]


def _frame_dirs() -> set[str]:
    return {n for n in _shm() if n.startswith("ident3d-frame-")}


@pytest.mark.slow
@pytest.mark.bpy
def test_blender_sigterm_and_sigkill_leave_nothing_and_resume(tmp_path: Path) -> None:
    before = _frame_dirs()
    ref = tmp_path / "ref"
    r = subprocess.run(_blender(ref), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert _frame_dirs() - before == set(), "a normal run left hand-off folders"
    for how in ("term", "kill"):
        out = tmp_path / how
        proc = subprocess.Popen(_blender(out), start_new_session=True, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        _wait_committed(proc, out, 1)
        if how == "term":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=300)
        assert _wait_gone(proc.pid, 60) == []
        r = subprocess.run(_blender(out, "--resume"), capture_output=True, text=True,
                           timeout=600)  # fmt: skip
        assert r.returncode == 0, r.stderr
        _same(out, ref)
        _clean(out)
    assert _frame_dirs() - before == set(), "hand-off folders were left in /dev/shm"
