"""Fault injection for the store (issue 17): a real SIGKILL of `ident3d convert` / `ident3d
export` running in a subprocess, then the documented recovery (`convert --resume`, re-running
the export), and a full disk under `convert`.

Kill moments are made deterministic rather than timed: for convert, one source image is a
FIFO, so the converter blocks on it after committing every shard before it (and with the
temporary file of the blocked shard open); the test kills it there, puts the real image in
place and resumes. For export, the test stops the process (SIGSTOP) as soon as its partial
folder holds PNGs, then kills it; if an export finishes before it is seen, the trial is
repeated with a larger dataset. The fast variants run in the default suite, the ones with
several kill moments are marked slow.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ident3d import store
from ident3d.cli import main

H, W = 8, 6
DEADLINE_S = 120  # only a guard against a hung subprocess; no test depends on timing


# ----------------------------------------------------------------------------- helpers


def _make_source(root: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    """An original-layout 3DIdent folder with ``n`` small images; returns the images."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    np.save(root / "raw_latents.npy", rng.uniform(-1, 1, (n, 10)))
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
    return images


def _ident3d(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ident3d", *args], capture_output=True, text=True, timeout=300
    )


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ident3d", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group (the converter and any decoding workers) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def _wait_for(proc: subprocess.Popen[bytes], ready: object) -> None:
    """Poll until ``ready()`` holds; fail if the process exits first or hangs."""
    end = time.monotonic() + DEADLINE_S
    while not ready():  # type: ignore[operator]
        if proc.poll() is not None:
            pytest.fail(f"the subprocess exited ({proc.returncode}) before the kill moment")
        if time.monotonic() > end:
            _kill(proc)
            pytest.fail("the subprocess never reached the kill moment")
        time.sleep(0.005)


def _committed(dst: Path) -> int:
    try:
        return len(json.loads((dst / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def _tmp_files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def _shard_tmp_files(folder: Path) -> list[str]:
    return [name for name in _tmp_files(folder) if name.startswith(".shard-")]


def _assert_clean_dataset(dst: Path, ref: Path) -> None:
    """``dst`` is the same dataset as the uninterrupted ``ref``: every shard byte-identical,
    verify clean (no finding, no warning) and no temporary file left."""
    digests = {e["file"]: e["sha256"] for e in store.read_manifest(dst)["shards"]}
    assert digests == {e["file"]: e["sha256"] for e in store.read_manifest(ref)["shards"]}
    for name in digests:
        assert (dst / name).read_bytes() == (ref / name).read_bytes()
    done = _ident3d("verify", str(dst))
    assert done.returncode == 0 and "warning" not in done.stdout, done.stdout
    assert _tmp_files(dst) == []
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in ref.iterdir())


@pytest.fixture
def fifo_image() -> Iterator[object]:
    """Replace one image of a source by a FIFO (opening it blocks until a writer appears)."""
    made: list[tuple[Path, np.ndarray]] = []

    def make(path: Path, image: np.ndarray) -> None:
        path.unlink()
        os.mkfifo(path)
        made.append((path, image))

    def restore() -> None:
        while made:
            path, image = made.pop()
            path.unlink()
            Image.fromarray(image).save(path)

    make.restore = restore  # type: ignore[attr-defined]
    yield make
    restore()


def _kill_convert_at(
    tmp_path: Path, fifo_image: object, n: int, shard_size: int, block_at: int, workers: int
) -> None:
    """Convert with image ``block_at`` blocking, SIGKILL once every earlier shard is
    committed, resume, and compare with an uninterrupted conversion."""
    src, ref, dst = tmp_path / "src", tmp_path / "ref", tmp_path / "dst"
    images = _make_source(src, n)
    args = ["--shard-size", str(shard_size), "-j", str(workers), "--no-progress"]
    assert _ident3d("convert", str(src), str(ref), *args).returncode == 0
    fifo_image(src / "images" / f"{block_at:03d}.png", images[block_at])  # type: ignore[operator]
    proc = _start("convert", str(src), str(dst), *args)
    before = block_at // shard_size  # shards complete before the blocked one
    _wait_for(proc, lambda: _committed(dst) == before and _shard_tmp_files(dst) if workers == 1
              else _committed(dst) == before and (dst / "manifest.json").exists())  # fmt: skip
    _kill(proc)
    assert proc.returncode == -signal.SIGKILL
    assert _committed(dst) == before < store.read_manifest(dst)["num_shards"]
    fifo_image.restore()  # type: ignore[attr-defined]
    # a plain re-run refuses and names --resume; --resume continues
    again = _ident3d("convert", str(src), str(dst), *args)
    assert again.returncode == 2 and "--resume" in again.stderr
    done = _ident3d("convert", str(src), str(dst), *args, "--resume")
    assert done.returncode == 0, done.stderr
    _assert_clean_dataset(dst, ref)


# ----------------------------------------------------------------------------- convert: SIGKILL


def test_sigkill_convert_then_resume(tmp_path: Path, fifo_image: object) -> None:
    """A converter killed after committing 2 of 4 shards, with shard 2's temporary file
    open: `convert --resume` gives the uninterrupted result and leaves nothing behind."""
    _kill_convert_at(tmp_path, fifo_image, n=14, shard_size=4, block_at=9, workers=1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("block_at", "workers"),
    [(1, 1), (4, 1), (27, 1), (29, 1), (13, 2), (26, 3)],
    ids=["first-shard", "shard-boundary", "last-shard", "last-image", "pool-2", "pool-3"],
)
def test_sigkill_convert_several_moments(
    tmp_path: Path, fifo_image: object, block_at: int, workers: int
) -> None:
    _kill_convert_at(tmp_path, fifo_image, n=30, shard_size=4, block_at=block_at, workers=workers)


@pytest.mark.slow
def test_sigkill_convert_twice_then_overwrite(tmp_path: Path, fifo_image: object) -> None:
    """Killed, resumed and killed again; then --overwrite starts from zero and leaves none of
    the old conversion (no temporary shard of the killed writers)."""
    src, ref, dst = tmp_path / "src", tmp_path / "ref", tmp_path / "dst"
    images = _make_source(src, 20)
    args = ["--shard-size", "3", "-j", "1", "--no-progress"]
    assert _ident3d("convert", str(src), str(ref), *args).returncode == 0
    for block_at, resume in ((4, []), (13, ["--resume"])):
        fifo_image(src / "images" / f"{block_at:03d}.png", images[block_at])  # type: ignore[operator]
        proc = _start("convert", str(src), str(dst), *args, *resume)
        _wait_for(proc, lambda b=block_at: _committed(dst) == b // 3 and _shard_tmp_files(dst))
        _kill(proc)
        fifo_image.restore()  # type: ignore[attr-defined]
        assert len(_tmp_files(dst)) == 1  # the dead writer's; the resumed run removed the first
    done = _ident3d("convert", str(src), str(dst), *args, "--overwrite")
    assert done.returncode == 0, done.stderr
    _assert_clean_dataset(dst, ref)


# ----------------------------------------------------------------------------- export: SIGKILL


def _partials(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if ".partial-" in p.name)


def _kill_export(tmp_path: Path, n: int, pngs_before_kill: int) -> None:
    """Export, SIGKILL once the partial folder holds PNGs, re-run; compare with an
    uninterrupted export. Repeats with twice the data if an export ends before it is seen."""
    for attempt in range(4):
        base = tmp_path / f"try{attempt}"
        src, root, ref, out = base / "src", base / "ds", base / "ref", base / "out" / "exp"
        _make_source(src, n)
        assert _ident3d("convert", str(src), str(root), "-j", "1", "--no-progress").returncode == 0
        assert _ident3d("export", str(root), str(ref), "-j", "1", "--no-progress").returncode == 0
        out.parent.mkdir()
        proc = _start("export", str(root), str(out), "-j", "1", "--no-progress")

        def seen(parent: Path = out.parent) -> bool:
            for p in _partials(parent):
                images = p / "images"
                if images.is_dir() and len(os.listdir(images)) >= pngs_before_kill:
                    return True
            return False

        end = time.monotonic() + DEADLINE_S
        while not seen() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.001)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGSTOP)
        if proc.poll() is not None or out.exists():  # finished before the kill moment
            _kill(proc)
            n *= 2
            continue
        _kill(proc)
        (stale,) = _partials(out.parent)
        assert f"-{proc.pid}-" in stale.name and not out.exists()
        done = _ident3d("export", str(root), str(out), "-j", "1", "--no-progress")
        assert done.returncode == 0, done.stderr
        assert _partials(out.parent) == [] and sorted(os.listdir(out.parent)) == ["exp"]
        ref_files = sorted(p.relative_to(ref) for p in ref.rglob("*"))
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == ref_files
        for rel in ref_files:
            if (ref / rel).is_file():
                assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
        back = base / "back"
        assert _ident3d("convert", str(out), str(back), "-j", "1").returncode == 0
        _assert_clean_dataset(back, root)
        return
    pytest.fail("every export finished before it could be killed")


def test_sigkill_export_then_rerun(tmp_path: Path) -> None:
    _kill_export(tmp_path, n=200, pngs_before_kill=1)


@pytest.mark.slow
@pytest.mark.parametrize("pngs_before_kill", [0, 50, 150])
def test_sigkill_export_several_moments(tmp_path: Path, pngs_before_kill: int) -> None:
    _kill_export(tmp_path, n=400, pngs_before_kill=pngs_before_kill)


# ----------------------------------------------------------------------------- convert: full disk


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_convert_enospc_in_image_write_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC from HDF5 while writing the second shard's images: one `error:` line naming the
    path, exit 2, and nothing left in DST."""
    import h5py

    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_source(src, 10)
    real = h5py.Dataset.__setitem__
    calls = {"n": 0}

    def full(self: h5py.Dataset, key: object, value: object) -> None:
        if self.name == "/images":
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    code, out, err = _cli(["convert", str(src), str(dst), "-j", "1", "--shard-size", "4"], capsys)
    assert code == 2 and out == ""
    assert err == f"error: disk full while writing shard-00001.h5 in {dst}; nothing was kept.\n"
    assert not dst.exists()


def test_convert_enospc_in_manifest_commit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_source(src, 10)
    real = os.fsync
    calls = {"n": 0}

    def full(fd: int) -> None:
        if ".manifest.json.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            calls["n"] += 1
            if calls["n"] == 3:  # creation, shard 0's commit, then shard 1's commit
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = _cli(["convert", str(src), str(dst), "-j", "1", "--shard-size", "4"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: disk full while writing {dst / 'manifest.json'}")
    assert "nothing was kept" in err and not dst.exists()


_FULL_DEVICE_PROBE = """
import os, sys
from ident3d.store import writer
real_init = writer.ShardWriter.__init__
def init(self, *a, **k):
    real_init(self, *a, **k)
    if self.index == 1:  # shard 1's temporary file is the kernel's always-full device
        os.symlink("/dev/full", self.tmp_path)
writer.ShardWriter.__init__ = init
from ident3d.cli import main
main(["convert", sys.argv[1], sys.argv[2], "-j", "1", "--shard-size", "4", "--no-progress"])
"""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_convert_real_enospc_from_dev_full(tmp_path: Path) -> None:
    """The kernel's ENOSPC (writes to /dev/full) reaching HDF5 while a shard is created."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _make_source(src, 10)
    done = subprocess.run([sys.executable, "-c", _FULL_DEVICE_PROBE, str(src), str(dst)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.startswith("error: disk full") and str(dst) in done.stderr
    assert done.stderr.count("\n") == 1 and not dst.exists()


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


def test_convert_on_a_full_tmpfs(tmp_path: Path) -> None:
    """A real full file system (a 512 KiB tmpfs; needs root): one error line, exit 2, nothing
    left. Measured before the writer fix: the error line is printed and DST removed, then the
    process dies with SIGSEGV (exit 139) in h5py's teardown of the aborted shard."""
    src, mnt = tmp_path / "src", tmp_path / "mnt"
    rng = np.random.default_rng(0)
    (src / "images").mkdir(parents=True)
    np.save(src / "raw_latents.npy", rng.uniform(-1, 1, (120, 10)))
    for i in range(120):  # 12 KiB of pixels each: 1.4 MiB in all, more than the tmpfs holds
        img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(src / "images" / f"{i:03d}.png", compress_level=0)
    if not _mount_tmpfs(mnt, "512k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        dst = mnt / "ds"
        done = _ident3d("convert", str(src), str(dst), "-j", "1", "--shard-size", "16",
                        "--no-progress")  # fmt: skip
        assert not dst.exists() and os.listdir(mnt) == []
        assert done.stderr.startswith("error: disk full while writing shard-")
        assert str(dst) in done.stderr and done.stderr.count("\n") == 1
        assert done.returncode == 2, done.returncode
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
