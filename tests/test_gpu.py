"""loratui.core.gpu against a fake pynvml module (no GPU needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest

from loratui.core import gpu

GiB = 1024**3


class FakeNVMLError(Exception):
    pass


def make_fake_pynvml(devices: list[dict], *, init_error: Exception | None = None, failing: set[str] = frozenset()):
    """A pynvml stand-in. ``devices``: dicts of name/uuid/total/used/util/temp/power_mw/limit_mw/procs."""
    mod = types.ModuleType("pynvml")
    mod.NVMLError = FakeNVMLError
    mod.NVML_TEMPERATURE_GPU = 0
    mod.calls = {"init": 0, "shutdown": 0}

    def guard(name):
        if name in failing:
            raise FakeNVMLError("Not Supported")

    def nvmlInit():
        mod.calls["init"] += 1
        if init_error is not None:
            raise init_error

    def nvmlShutdown():
        mod.calls["shutdown"] += 1

    def nvmlDeviceGetCount():
        return len(devices)

    def nvmlDeviceGetHandleByIndex(i):
        guard("handle")
        return devices[i]

    def nvmlDeviceGetName(h):
        guard("name")
        return h["name"]

    def nvmlDeviceGetUUID(h):
        return h["uuid"]

    def nvmlDeviceGetMemoryInfo(h):
        guard("memory")
        return SimpleNamespace(total=h["total"], used=h["used"], free=h["total"] - h["used"])

    def nvmlDeviceGetUtilizationRates(h):
        guard("util")
        return SimpleNamespace(gpu=h["util"], memory=10)

    def nvmlDeviceGetTemperature(h, sensor):
        guard("temp")
        assert sensor == 0
        return h["temp"]

    def nvmlDeviceGetPowerUsage(h):
        guard("power")
        return h["power_mw"]

    def nvmlDeviceGetEnforcedPowerLimit(h):
        guard("limit")
        return h["limit_mw"]

    def nvmlDeviceGetComputeRunningProcesses(h):
        guard("procs")
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in h.get("procs", [])]

    def nvmlDeviceGetGraphicsRunningProcesses(h):
        guard("procs")
        return []

    for fn in list(locals().values()):
        if callable(fn) and getattr(fn, "__name__", "").startswith("nvml"):
            setattr(mod, fn.__name__, fn)
    return mod


def device(i: int, **kw) -> dict:
    d = dict(name=f"NVIDIA H100 80GB HBM3 #{i}", uuid=f"GPU-{i:04d}aaaa-bbbb", total=80 * GiB, used=(i + 1) * GiB,
             util=50 + i, temp=40 + i, power_mw=300_000 + i * 1000, limit_mw=700_000, procs=[])
    d.update(kw)
    return d


@pytest.fixture
def fake_nvml(monkeypatch):
    def install(mod):
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        gpu._reset()
        return mod

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    yield install
    gpu._reset()


def test_normal_values(fake_nvml):
    nv = fake_nvml(make_fake_pynvml([device(0, procs=[(1234, 3 * GiB)]), device(1)]))
    gpus = gpu.query_gpus()
    assert [g.index for g in gpus] == [0, 1]
    g = gpus[0]
    assert g.name == "NVIDIA H100 80GB HBM3 #0"
    assert (g.memory_total, g.memory_used, g.memory_free) == (80 * GiB, 1 * GiB, 79 * GiB)
    assert g.utilization == 50 and g.temperature == 40
    assert g.power == pytest.approx(300.0) and g.power_limit == pytest.approx(700.0)
    assert g.processes == [(1234, 3 * GiB)]
    assert g.cuda_index == 0 and gpus[1].cuda_index == 1
    assert gpu.nvml_available() and gpu.nvml_error() == ""
    gpu.query_gpus()
    assert nv.calls["init"] == 1, "NVML is initialised once"
    gpu.shutdown()
    assert nv.calls["shutdown"] == 1


def test_bytes_names_are_decoded(fake_nvml):
    fake_nvml(make_fake_pynvml([device(0, name=b"Tesla T4")]))
    assert gpu.query_gpus()[0].name == "Tesla T4"


@pytest.mark.parametrize("failing,field", [
    ("name", "name"), ("memory", "memory_used"), ("util", "utilization"), ("temp", "temperature"),
    ("power", "power"), ("limit", "power_limit"),
])
def test_nvml_error_per_field_is_none(fake_nvml, failing, field):
    fake_nvml(make_fake_pynvml([device(0)], failing={failing}))
    g = gpu.query_gpus()[0]
    assert getattr(g, field) is None
    # the other fields still came through
    assert g.memory_total is not None or failing == "memory"
    assert g.utilization is not None or failing == "util"


def test_missing_function_and_lost_gpu_are_na(fake_nvml):
    mod = make_fake_pynvml([device(0), device(1)], failing={"handle"})
    del mod.nvmlDeviceGetPowerUsage  # an old library without the call
    fake_nvml(mod)
    gpus = gpu.query_gpus()
    assert len(gpus) == 2 and all(g.name is None and g.memory_used is None for g in gpus)
    mod2 = make_fake_pynvml([device(0)])
    del mod2.nvmlDeviceGetPowerUsage
    fake_nvml(mod2)
    assert gpu.query_gpus()[0].power is None


def test_unavailable_process_memory_is_none(fake_nvml):
    fake_nvml(make_fake_pynvml([device(0, procs=[(10, None), (11, 2 * GiB)])]))
    g = gpu.query_gpus()[0]
    assert g.processes == [(10, None), (11, 2 * GiB)]
    assert g.process_memory({10}) is None
    assert g.process_memory({10, 11}) == 2 * GiB


def test_no_driver(fake_nvml):
    nv = fake_nvml(make_fake_pynvml([], init_error=FakeNVMLError("Driver Not Loaded")))
    assert gpu.query_gpus() == []
    assert not gpu.nvml_available()
    assert "Driver Not Loaded" in gpu.nvml_error()
    gpu.query_gpus()
    assert nv.calls["init"] == 1, "a failed init is not retried on every sample"
    snap = gpu.GpuSampler().sample()
    assert snap.gpus == [] and not snap.available and "Driver Not Loaded" in snap.error
    assert snap.host is not None and snap.host.total > 0
    assert snap.run_memory(os.getpid()) is None


def test_no_gpus(fake_nvml):
    fake_nvml(make_fake_pynvml([]))
    assert gpu.query_gpus() == [] and not gpu.nvml_available()
    assert gpu.nvml_error() == "NVML found no GPU"


def test_pynvml_not_installed(fake_nvml, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    gpu._reset()
    assert gpu.query_gpus() == [] and not gpu.nvml_available()
    assert "not installed" in gpu.nvml_error()


def test_real_machine_without_gpu_does_not_raise():
    gpu._reset()
    try:
        gpus = gpu.query_gpus()
        assert isinstance(gpus, list)
        assert gpu.nvml_available() == bool(gpus)
    finally:
        gpu.shutdown()
        gpu._reset()


@pytest.mark.parametrize("env,expected", [
    (None, [0, 1, 2, 3]),
    ("", []),
    ("2", [2]),
    ("3,1", [3, 1]),
    (" 1 , 0 ", [1, 0]),
    ("1,7,2", [1]),  # CUDA stops at an index that does not exist
    ("1,x,2", [1]),  # ... and at an entry it cannot parse
    ("1,1", [1]),  # a repeat is invalid
    ("-1", []),
    ("GPU-0002", [2]),  # UUID prefix
    ("GPU-00", []),  # ambiguous prefix
    ("0,GPU-0003aaaa-bbbb", [0, 3]),
])
def test_cuda_visible_devices_mapping(fake_nvml, monkeypatch, env, expected):
    fake_nvml(make_fake_pynvml([device(i) for i in range(4)]))
    if env is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    gpus = gpu.query_gpus()
    assert [g.index for g in gpus] == expected
    assert [g.cuda_index for g in gpus] == list(range(len(expected)))
    everything = gpu.query_gpus(visible_only=False)
    assert [g.index for g in everything] == [0, 1, 2, 3]
    assert {g.index: g.cuda_index for g in everything if g.cuda_index is not None} == {
        phys: i for i, phys in enumerate(expected)}


def test_run_memory_matches_pid_and_children(fake_nvml):
    # a real process tree: this test process -> child sleeper
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        me = os.getpid()
        fake_nvml(make_fake_pynvml([
            device(0, procs=[(me, 4 * GiB), (child.pid, 1 * GiB), (999_999_99, 7 * GiB)]),
            device(1, procs=[(child.pid, 2 * GiB)]),
            device(2, procs=[(424242, 5 * GiB)]),
        ]))
        sampler = gpu.GpuSampler(pid=me)
        snap = sampler.sample()
        assert me in snap.run_pids and child.pid in snap.run_pids
        assert snap.run_memory() == 7 * GiB  # 4 + 1 + 2, not the stranger's 7 or 5
        assert snap.run_memory(child.pid) == 3 * GiB
        assert [g.index for g in snap.run_gpus()] == [0, 1]
        assert sampler.run_memory() == 7 * GiB
        assert snap.run_memory(None) == 7 * GiB
        assert gpu.GpuSampler(pid=None).sample().run_memory() is None
        assert snap.run_memory(2**22 + 12345) is None  # a pid that holds nothing
    finally:
        child.kill()
        child.wait()


def test_rank_processes_are_labelled_by_their_rank(fake_nvml):
    """Under torchrun the run's pid is the supervisor; its rank processes (RANK in their environment) hold the
    cards. Each card lists its rank's memory as 'rank N'; a process without RANK is named by its pid."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(30)"]
    ranks = [subprocess.Popen(sleeper, env={**os.environ, "RANK": str(r), "WORLD_SIZE": "2"}) for r in (0, 1)]
    other = subprocess.Popen(sleeper, env={k: v for k, v in os.environ.items() if k != "RANK"})
    try:
        me = os.getpid()
        fake_nvml(make_fake_pynvml([
            device(0, procs=[(ranks[0].pid, 5 * GiB)]),
            device(1, procs=[(ranks[1].pid, 6 * GiB), (other.pid, 1 * GiB)]),
            device(2, procs=[(424242, 3 * GiB)]),
        ]))
        snap = gpu.GpuSampler(pid=me).sample()
        assert snap.run_ranks == {ranks[0].pid: 0, ranks[1].pid: 1}
        assert [g.index for g in snap.run_gpus()] == [0, 1]
        assert snap.run_processes(snap.gpus[0]) == [("rank 0", 5 * GiB)]
        assert snap.run_processes(snap.gpus[1]) == [("rank 1", 6 * GiB), (f"pid {other.pid}", 1 * GiB)]
        assert snap.run_processes(snap.gpus[2]) == []
        cache: dict = {}
        assert gpu.process_ranks(frozenset({ranks[1].pid, 2**22 + 12345}), cache) == {ranks[1].pid: 1}
        assert cache == {ranks[1].pid: 1, 2**22 + 12345: None}  # read once; a gone pid is remembered as unknown
    finally:
        for p in (*ranks, other):
            p.kill()
            p.wait()


def test_format_bytes():
    assert gpu.format_bytes(None) == "N/A"
    assert gpu.format_bytes(512) == "512 B"
    assert gpu.format_bytes(1536 * 1024**2) == "1.5 GiB"
    assert gpu.format_bytes(80 * GiB) == "80.0 GiB"
    assert gpu.format_bytes(200 * GiB) == "200 GiB"
    assert gpu.format_bytes(3 * GiB, "GiB") == "3.0 GiB"


def test_no_driver_library_is_said_plainly(fake_nvml):
    """Issue 19 item 18: NVML's 'NVML Shared Library Not Found' (a machine without the NVIDIA driver) reads as such."""
    fake_nvml(make_fake_pynvml([], init_error=FakeNVMLError("NVML Shared Library Not Found")))
    assert gpu.nvml_error() == "no NVIDIA driver on this machine"
    assert gpu.GpuSampler().sample().error == "no NVIDIA driver on this machine"
