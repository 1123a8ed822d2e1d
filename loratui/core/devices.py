"""Which cards a run uses and how many processes it needs: decided once, before launch, from the config and NVML.

Light module (NVML through loratui.core.gpu; no torch): the CLI, the app and the launcher share it, so a run uses
exactly the cards and the batch the user chose, and Setup, the launcher and the ``started`` event say the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from loratui.core.config import RunConfig
from loratui.core.errors import ConfigError
from loratui.core.gpu import GpuInfo, query_gpus


@dataclass(frozen=True)
class DevicePlan:
    gpus: tuple[int, ...]
    """Physical indices (as nvidia-smi numbers them) of the chosen cards; empty on a machine without GPUs."""
    names: tuple[str, ...] = ()
    processes: int = 1
    """Processes on this node: one a card when several cards train together."""
    nodes: int = 1
    distributed: str = "none"
    """none | ddp | fsdp | auto (auto: the engine picks DDP or FSDP once it knows the method and the estimate)."""
    per_device_batch: int = 1
    grad_accum: int = 1
    notes: tuple[str, ...] = field(default=())

    @property
    def world_size(self) -> int:
        return self.processes * self.nodes

    @property
    def effective_batch(self) -> int:
        return self.per_device_batch * self.world_size * self.grad_accum

    def env(self) -> dict[str, str]:
        """What the engine process is started with: exactly the chosen cards, numbered as NVML numbers them."""
        env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in self.gpus)
        return env

    def describe(self) -> str:
        if not self.gpus:
            return "CPU (no NVIDIA GPU found)"
        cards = f"{len(self.gpus)} card{'s' if len(self.gpus) > 1 else ''} ({', '.join(map(str, self.gpus))})"
        how = {"none": "one process", "ddp": "DDP", "fsdp": "FSDP", "auto": "DDP or FSDP"}[self.distributed]
        nodes = f" x {self.nodes} nodes" if self.nodes > 1 else ""
        return f"{cards}{nodes}, {how}; {self.batch_line()}"

    def batch_line(self) -> str:
        """'batch 8 a card x 2 cards x 4 accumulation = 64 a step' (the effective batch, as Setup shows it)."""
        n = self.world_size
        return (f"batch {self.per_device_batch} a card x {n} card{'s' if n != 1 else ''} x {self.grad_accum} "
                f"accumulation = {self.effective_batch} a step")


def plan_devices(cfg: RunConfig, gpus: list[GpuInfo] | None = None) -> DevicePlan:
    """The cards ``cfg.train.gpus`` names among the visible ones (physical order), and the processes they need."""
    t = cfg.train
    visible = query_gpus() if gpus is None else gpus
    by_index = {g.index: g for g in visible}
    indices = sorted(by_index)
    common = dict(per_device_batch=t.batch_size, grad_accum=t.grad_accum, nodes=t.nodes)
    if not indices:
        if t.gpus != "auto":
            raise ConfigError("train.gpus names cards, but no NVIDIA GPU is visible here", field="train.gpus",
                              hint="set train.gpus: auto to train on the CPU")
        return DevicePlan(gpus=(), **common)
    if t.gpus == "auto":
        chosen = indices
    elif isinstance(t.gpus, int):
        if t.gpus > len(indices):
            raise ConfigError(f"train.gpus asks for {t.gpus} cards, {len(indices)} visible ({_names(visible)})",
                              field="train.gpus", hint=f"use at most {len(indices)}, or auto")
        chosen = indices[:t.gpus]
    else:
        missing = [i for i in t.gpus if i not in by_index]
        if missing:
            raise ConfigError(f"train.gpus names card {missing[0]}, not among the visible cards {indices}",
                              field="train.gpus", hint="pick from: " + _names(visible))
        chosen = list(t.gpus)
    notes = []
    distributed = t.distributed
    if distributed == "none" and len(chosen) > 1:
        notes.append(f"train.distributed none: one process on card {chosen[0]} (of {len(chosen)} chosen)")
        chosen = chosen[:1]
    if len(chosen) == 1 and t.nodes == 1:
        distributed = "none"
    elif distributed == "none":
        distributed = "auto"
    return DevicePlan(gpus=tuple(chosen), names=tuple(by_index[i].name or "?" for i in chosen),
                      processes=len(chosen), distributed=distributed, notes=tuple(notes), **common)


def _names(gpus: list[GpuInfo]) -> str:
    return ", ".join(f"{g.index}: {g.name or '?'}" for g in gpus) or "none"


def running_under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def rows_this_machine_runs(rows: list, gpu: bool) -> list:
    """The memory estimate's rows worth showing on this machine: all on a GPU box; without an NVIDIA GPU the
    comparison rows for QLoRA go (bitsandbytes' 4-bit kernels need one). The first row, the config itself, always
    stays (its own estimate says what it would need). Setup's panel and ``loratui estimate`` both show this."""
    if gpu:
        return list(rows)
    return [row for i, row in enumerate(rows) if i == 0 or "qlora" not in str(row.label).lower()]
