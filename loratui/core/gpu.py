"""GPU sampling through NVML (``nvidia-ml-py``'s ``pynvml``), the way nvitop does it.

- ``pynvml`` is imported and initialised lazily, once, on the first query; ``nvmlShutdown`` runs at exit.
- Every query is wrapped: an ``NVMLError`` (or a function missing from an old driver) becomes ``None``, which the
  UI shows as "N/A". A lost GPU never raises.
- No driver, no library or no GPU: :func:`query_gpus` returns ``[]`` and :func:`nvml_available` is False.
- ``CUDA_VISIBLE_DEVICES`` indices (or ``GPU-`` UUIDs) are mapped to physical NVML devices, in CUDA order.

Light module: no textual, no torch. ``psutil`` gives host memory and a run's child processes.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from loratui.core.fmt import format_bytes  # noqa: F401 - re-exported (one formatter for bytes)

__all__ = [
    "GpuInfo", "GpuSnapshot", "GpuSampler", "HostMemory", "nvml_available", "nvml_error", "query_gpus",
    "visible_physical_indices", "format_bytes", "shutdown", "process_ranks",
]

_lock = threading.Lock()
_nvml: Any = None  # the pynvml module once initialised
_state: bool | None = None  # None: not tried yet; True: initialised; False: unavailable
_reason: str = ""  # why NVML is unavailable


def _init() -> Any:
    """Import and initialise pynvml once; return the module, or None when NVML can't be used."""
    global _nvml, _state, _reason
    if _state is not None:
        return _nvml if _state else None
    with _lock:
        if _state is not None:
            return _nvml if _state else None
        try:
            import pynvml  # nvidia-ml-py
        except Exception as err:  # not installed
            _state, _reason = False, f"pynvml is not installed ({err})"
            return None
        try:
            pynvml.nvmlInit()
        except Exception as err:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            _state, _reason = False, _describe(err)
            return None
        _nvml, _state, _reason = pynvml, True, ""
        atexit.register(shutdown)
        return _nvml


def _describe(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def shutdown() -> None:
    """Shut NVML down (registered with atexit on first use); later queries initialise it again."""
    global _nvml, _state
    with _lock:
        if _state and _nvml is not None:
            try:
                _nvml.nvmlShutdown()
            except Exception:
                pass
        _nvml, _state = None, None


def _reset() -> None:
    """Forget the NVML state without calling into it (tests swap the pynvml module)."""
    global _nvml, _state, _reason
    with _lock:
        _nvml, _state, _reason = None, None, ""


def nvml_available() -> bool:
    """True when NVML initialised and reports at least one GPU."""
    nv = _init()
    if nv is None:
        return False
    count = _call(nv, "nvmlDeviceGetCount")
    return bool(count)


def nvml_error() -> str:
    """Why NVML is unavailable ("" when it works)."""
    nv = _init()
    if nv is None:
        reason = _reason or "NVML unavailable"
        if "Shared Library Not Found" in reason or "libnvidia-ml" in reason:
            return "no NVIDIA driver on this machine"  # what NVML's own words mean to a user
        return reason
    if not _call(nv, "nvmlDeviceGetCount"):
        return "NVML found no GPU"
    return ""


def _call(nv: Any, name: str, *args: Any) -> Any:
    """``nv.<name>(*args)``; None on an NVMLError or when the function is missing (old driver/library)."""
    fn = getattr(nv, name, None)
    if fn is None:
        return None
    try:
        return fn(*args)
    except Exception:  # NVMLError and friends: N/A, never a crash
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass
class GpuInfo:
    """One physical GPU. ``None`` in any field means NVML could not tell (shown as "N/A")."""

    index: int
    """Physical (NVML) index."""
    name: str | None = None
    memory_total: int | None = None
    """Bytes."""
    memory_used: int | None = None
    memory_free: int | None = None
    utilization: int | None = None
    """GPU utilisation in percent."""
    temperature: int | None = None
    """Degrees Celsius."""
    power: float | None = None
    """Watts drawn now."""
    power_limit: float | None = None
    """Enforced power limit in watts."""
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    """(pid, used bytes or None) for each compute/graphics process on this GPU."""
    uuid: str | None = None
    cuda_index: int | None = None
    """Index as CUDA numbers it under CUDA_VISIBLE_DEVICES (None when it is not visible)."""

    @property
    def memory_fraction(self) -> float | None:
        if not self.memory_total or self.memory_used is None:
            return None
        return self.memory_used / self.memory_total

    def process_memory(self, pids: set[int] | frozenset[int]) -> int | None:
        """Bytes used by the given pids on this GPU; None when none of them is listed or NVML hides the size."""
        total, found = 0, False
        for pid, used in self.processes:
            if pid in pids and used is not None:
                total += used
                found = True
        return total if found else None


def _query_one(nv: Any, index: int, handle: Any) -> GpuInfo:
    info = GpuInfo(index=index)
    info.name = _text(_call(nv, "nvmlDeviceGetName", handle))
    info.uuid = _text(_call(nv, "nvmlDeviceGetUUID", handle))
    mem = _call(nv, "nvmlDeviceGetMemoryInfo", handle)
    if mem is not None:
        info.memory_total = _int_attr(mem, "total")
        info.memory_used = _int_attr(mem, "used")
        info.memory_free = _int_attr(mem, "free")
    util = _call(nv, "nvmlDeviceGetUtilizationRates", handle)
    if util is not None:
        info.utilization = _int_attr(util, "gpu")
    sensor = getattr(nv, "NVML_TEMPERATURE_GPU", 0)
    temp = _call(nv, "nvmlDeviceGetTemperature", handle, sensor)
    info.temperature = int(temp) if isinstance(temp, (int, float)) else None
    power = _call(nv, "nvmlDeviceGetPowerUsage", handle)  # milliwatts
    info.power = power / 1000.0 if isinstance(power, (int, float)) else None
    limit = _call(nv, "nvmlDeviceGetEnforcedPowerLimit", handle)
    if limit is None:
        limit = _call(nv, "nvmlDeviceGetPowerManagementLimit", handle)
    info.power_limit = limit / 1000.0 if isinstance(limit, (int, float)) else None
    procs: dict[int, int | None] = {}
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for p in _call(nv, getter, handle) or []:
            pid = getattr(p, "pid", None)
            if pid is None:
                continue
            used = getattr(p, "usedGpuMemory", None)
            used = int(used) if isinstance(used, (int, float)) and 0 <= used < 2**63 else None
            prev = procs.get(pid)
            procs[pid] = used if prev is None else (prev if used is None else max(prev, used))
    info.processes = sorted(procs.items())
    return info


def _int_attr(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    return int(value) if isinstance(value, (int, float)) else None


def parse_cuda_visible_devices(value: str | None) -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES as CUDA reads them; None when unset (all GPUs visible).

    CUDA stops at the first entry it cannot parse, and an empty string hides every GPU.
    """
    if value is None:
        return None
    out: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item:
            break
        if item.lstrip("-").isdigit():
            if int(item) < 0:
                break
            out.append(str(int(item)))
        elif item.upper().startswith(("GPU-", "MIG-")):
            out.append(item)
        else:
            break
    return out


def visible_physical_indices(count: int, uuids: list[str | None], env: str | None) -> list[int]:
    """Physical indices of the GPUs CUDA sees, in CUDA order (entry i is ``cuda:i``).

    Numeric entries are physical indices (CUDA_DEVICE_ORDER=PCI_BUS_ID, which NVML uses too); ``GPU-`` entries
    match a UUID prefix. A repeated or unknown entry ends the list, as it makes CUDA fail past that point.
    """
    entries = parse_cuda_visible_devices(env)
    if entries is None:
        return list(range(count))
    out: list[int] = []
    for item in entries:
        if item.isdigit():
            idx = int(item)
        else:
            matches = [i for i, u in enumerate(uuids) if u and u.upper().startswith(item.upper())]
            if len(matches) != 1:
                break
            idx = matches[0]
        if idx >= count or idx in out:
            break
        out.append(idx)
    return out


def query_gpus(visible_only: bool = True, env: str | None | object = ...) -> list[GpuInfo]:
    """Every GPU CUDA can see (``visible_only``) or every physical GPU; [] without NVML or GPUs.

    ``env`` overrides ``CUDA_VISIBLE_DEVICES`` (``...``: read the environment; None: unset).
    """
    nv = _init()
    if nv is None:
        return []
    count = _call(nv, "nvmlDeviceGetCount") or 0
    infos: list[GpuInfo] = []
    for i in range(count):
        handle = _call(nv, "nvmlDeviceGetHandleByIndex", i)
        if handle is None:
            infos.append(GpuInfo(index=i))  # lost GPU: everything N/A
            continue
        infos.append(_query_one(nv, i, handle))
    if env is ...:
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = visible_physical_indices(count, [g.uuid for g in infos], env)  # type: ignore[arg-type]
    for cuda_i, phys in enumerate(order):
        infos[phys].cuda_index = cuda_i
    if not visible_only:
        return infos
    return [infos[p] for p in order]


@dataclass
class HostMemory:
    total: int
    used: int
    available: int

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total else 0.0


def host_memory() -> HostMemory | None:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return HostMemory(total=int(vm.total), used=int(vm.total - vm.available), available=int(vm.available))
    except Exception:
        return None


def process_tree(pid: int | None) -> frozenset[int]:
    """``pid`` and all its descendants (dataloader workers, compile workers)."""
    if not pid:
        return frozenset()
    pids = {int(pid)}
    try:
        import psutil

        pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    except Exception:
        pass
    return frozenset(pids)


def process_ranks(pids: frozenset[int] | set[int], cache: dict[int, int | None] | None = None) -> dict[int, int]:
    """pid -> torch.distributed rank, from each process's ``RANK`` environment variable (torchrun sets it on the
    rank processes); processes without it, or whose environment is not readable, are left out. ``cache`` keeps
    what was read (a process's environment does not change), so sampling at 1 Hz reads each process once."""
    out: dict[int, int] = {}
    cache = {} if cache is None else cache
    for pid in pids:
        if pid not in cache:
            rank = None
            try:
                import psutil

                value = psutil.Process(pid).environ().get("RANK")
                rank = int(value) if value is not None and value.strip().isdigit() else None
            except Exception:  # gone, not ours, or no /proc
                rank = None
            cache[pid] = rank
        if cache[pid] is not None:
            out[pid] = cache[pid]  # type: ignore[assignment]
    for pid in [p for p in cache if p not in pids]:
        del cache[pid]
    return out


@dataclass
class GpuSnapshot:
    """One sample: the visible GPUs, host memory, and why NVML is missing when it is."""

    gpus: list[GpuInfo]
    host: HostMemory | None
    time: float
    error: str = ""
    """Why there is no GPU data ("" when NVML works)."""
    run_pids: frozenset[int] = frozenset()
    """The watched run's process and its children at sampling time."""
    run_ranks: dict[int, int] = field(default_factory=dict)
    """pid -> rank for the run's rank processes (several cards under torchrun); empty for one process."""

    @property
    def available(self) -> bool:
        return bool(self.gpus)

    def run_memory(self, pid: int | None = None) -> int | None:
        """GPU bytes used by ``pid`` and its children on every GPU (default: the sampler's run pid).

        None when the process holds no GPU memory that NVML reports (or there is no GPU).
        """
        pids = process_tree(pid) if pid is not None else self.run_pids
        if not pids:
            return None
        total, found = 0, False
        for gpu in self.gpus:
            used = gpu.process_memory(pids)
            if used is not None:
                total += used
                found = True
        return total if found else None

    def run_gpus(self) -> list[GpuInfo]:
        """The GPUs the run's processes appear on."""
        return [g for g in self.gpus if any(pid in self.run_pids for pid, _ in g.processes)]

    def run_processes(self, gpu: GpuInfo) -> list[tuple[str, int | None]]:
        """The run's processes on ``gpu``: ("rank N" or "pid N", used bytes), the largest first."""
        rows = [(f"rank {self.run_ranks[pid]}" if pid in self.run_ranks else f"pid {pid}", used)
                for pid, used in gpu.processes if pid in self.run_pids]
        return sorted(rows, key=lambda r: -(r[1] or 0))


class GpuSampler:
    """Samples the visible GPUs and host memory; cheap enough for 1-2 Hz (NVML calls take microseconds)."""

    def __init__(self, pid: int | None = None, *, query: Callable[[], list[GpuInfo]] = query_gpus):
        self.pid = pid
        self._query = query
        self._ranks: dict[int, int | None] = {}

    def sample(self) -> GpuSnapshot:
        gpus = self._query()
        error = "" if gpus else nvml_error()
        pids = process_tree(self.pid)
        on_gpu = {pid for g in gpus for pid, _ in g.processes if pid in pids}
        return GpuSnapshot(gpus=gpus, host=host_memory(), time=time.time(), error=error, run_pids=pids,
                           run_ranks=process_ranks(frozenset(on_gpu), self._ranks) if len(pids) > 1 else {})

    def run_memory(self, pid: int | None = None) -> int | None:
        """Used GPU memory of ``pid`` (default: the sampler's pid) and its children, summed over GPUs."""
        snap = self.sample()
        return snap.run_memory(pid if pid is not None else self.pid)
