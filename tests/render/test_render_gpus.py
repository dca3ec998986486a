"""Pinning render workers to GPUs (ident3d.render.gpus, the worker slots of workers.py, and
ident3d.blender.devices.select_gpu on a stand-in of Cycles' preferences: no GPU here)."""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor

import pytest
from render_helpers import _cli

from ident3d.errors import UsageError
from ident3d.render import workers
from ident3d.render.gpus import GpuLayout, device_plan, parse_devices, worker_devices


class _Dev:
    def __init__(self, name: str, type_: str) -> None:
        self.name, self.type, self.use = name, type_, True


class _Prefs:
    """A stand-in for Cycles' add-on preferences with ``n`` GPUs of each backend listed."""

    def __init__(self, n: int, backends: tuple[str, ...] = ("OPTIX", "CUDA")) -> None:
        self.n, self.backends = n, backends
        self.compute_device_type = "NONE"
        self.devices: list[_Dev] = []

    def get_devices(self) -> None:
        t = self.compute_device_type
        self.devices = [_Dev("CPU", "CPU")]
        if t in self.backends:
            self.devices += [_Dev(f"GPU{i}", t) for i in range(self.n)]
            other = "CUDA" if t == "OPTIX" else "OPTIX"  # Cycles lists other backends too
            self.devices += [_Dev(f"GPU{i}", other) for i in range(self.n)]

    def used(self) -> list[str]:
        return [f"{d.type}:{d.name}" for d in self.devices if d.use]


def test_default_spreads_workers_over_the_gpus() -> None:
    assert device_plan(4, 4, None) == [[0], [1], [2], [3]]
    assert device_plan(6, 4, None) == [[0], [1], [2], [3], [0], [1]]  # 2 GPUs take 2 workers
    assert device_plan(2, 4, None) == [[0, 2], [1, 3]]  # fewer workers: every GPU still used
    assert device_plan(1, 8, None) == [list(range(8))]


def test_gpus_per_worker_and_device_selection() -> None:
    assert device_plan(3, 4, GpuLayout(2)) == [[0, 1], [2, 3], [0, 1]]
    assert device_plan(2, 4, GpuLayout(0)) == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert device_plan(4, 8, GpuLayout(None, (0, 2, 4, 6))) == [[0], [2], [4], [6]]
    assert device_plan(3, 4, GpuLayout(1, (1, 3))) == [[1], [3], [1]]
    assert parse_devices("0, 2,3") == (0, 2, 3) and parse_devices(None) is None
    for bad in ("x", "1,1", "-1", ","):
        with pytest.raises(UsageError):
            parse_devices(bad)
    with pytest.raises(UsageError, match="device 5 does not exist; Cycles lists 4"):
        worker_devices(0, 4, GpuLayout(None, (1, 5)))


def test_select_gpu_enables_only_the_workers_devices() -> None:
    from ident3d.blender.devices import select_gpu

    plan = device_plan(6, 4, None)
    for slot, want in enumerate(plan):
        prefs = _Prefs(4)
        choose = workers.gpu_chooser(
            workers.WorkerSpec("blender", {}, {}, 32, ("teapot",), 1, True,
                               GpuLayout(None, None, 6)), slot)  # fmt: skip
        backend, names = select_gpu(prefs, choose=choose)
        assert backend == "OPTIX" and names == [f"GPU{i}" for i in want]
        assert prefs.used() == [f"OPTIX:GPU{i}" for i in want]  # no CPU, no CUDA twin
    prefs = _Prefs(2, backends=("CUDA",))
    assert select_gpu(prefs, choose=lambda n: worker_devices(1, n, GpuLayout(1)))[1] == ["GPU1"]
    assert prefs.used() == ["CUDA:GPU1"]


def _slot_and_devices(spec: workers.WorkerSpec) -> tuple[int, list[int], int]:
    import time

    time.sleep(0.3)  # keep this worker busy so that the next task starts another one
    return workers._SLOT, workers.gpu_chooser(spec)(4), os.getpid()


def test_pool_workers_take_distinct_slots() -> None:
    """The spawned pool's initializer numbers its workers 0..W-1, each picking its own GPUs."""
    ctx = mp.get_context("spawn")
    spec = workers.WorkerSpec("mock", {}, {}, 32, ("teapot",), 1, True, GpuLayout(None, None, 3))
    with ProcessPoolExecutor(3, mp_context=ctx, initializer=workers._worker_init,
                             initargs=(os.getpid(), ctx.Value("i", 0))) as pool:  # fmt: skip
        got = list(pool.map(_slot_and_devices, [spec] * 3))
    by_pid = {pid: (slot, dev) for slot, dev, pid in got}
    assert sorted(by_pid.values()) == [(0, [0, 3]), (1, [1]), (2, [2])]


@pytest.mark.slow
@pytest.mark.bpy
def test_a_blender_worker_pins_its_gpu_through_the_stand_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """make_renderer -> SceneRenderer -> select_gpu with this worker's slot (Cycles' preferences
    replaced by the stand-in: there is no GPU to render on here)."""
    pytest.importorskip("bpy")
    from ident3d.blender import scene as blender_scene

    from ident3d.scenes import load_preset

    prefs = _Prefs(4)
    monkeypatch.setattr(blender_scene, "cycles_preferences", lambda: prefs)
    monkeypatch.setattr(workers, "_SLOT", 5)
    preset = load_preset("3dident")
    spec = workers.WorkerSpec("blender", preset.data, preset.quality("fast"), 32, ("teapot",),
                              1, True, GpuLayout(None, None, 6))  # fmt: skip
    r = workers.make_renderer(spec)
    try:
        assert r.scene.cycles.device == "GPU" and r.gpu_backend == "OPTIX"
        assert r.gpu_devices == ["GPU1"] and prefs.used() == ["OPTIX:GPU1"]
    finally:
        r.close()


def test_cli_gpu_options_need_gpu(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    for opt in (["--gpus-per-worker", "2"], ["--gpu-devices", "0,1"]):
        code, _, err = _cli(["render", "--renderer", "mock", "--out", str(out), "--n", "2",
                             *opt], capsys)  # fmt: skip
        assert code == 2 and err.strip() == f"error: {opt[0]} needs --gpu." and not out.exists()
    code, _, err = _cli(["render", "--renderer", "mock", "--out", str(out), "--n", "2", "--gpu",
                         "--gpu-devices", "1,1"], capsys)  # fmt: skip
    assert code == 2 and "lists a device twice" in err and not out.exists()
