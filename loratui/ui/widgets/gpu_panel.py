"""The GPU panel: memory of the card and of the run's processes, utilisation, temperature, power.

Fed with :class:`loratui.core.gpu.GpuSnapshot` objects; with no NVIDIA GPU it says so plainly and shows host memory.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from rich.text import Text
from textual.app import RenderResult
from textual.message import Message
from textual.widget import Widget

from loratui.core.gpu import GpuInfo, GpuSnapshot, format_bytes


@dataclass
class GpuSampled(Message):
    """A new GPU sample (from the sampler thread); a backlog collapses into the newest."""

    snapshot: GpuSnapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, GpuSampled)


def bar(fraction: float | None, width: int) -> Text:
    """A block bar; green, yellow past 75 %, red past 90 %."""
    width = max(1, width)
    if fraction is None:
        return Text("·" * width, style="dim")
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    style = "green" if fraction < 0.75 else "yellow" if fraction < 0.9 else "red"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))


def _na(value, fmt: str) -> str:
    return "N/A" if value is None else fmt.format(value)


class GpuPanel(Widget):
    """Renders the newest GPU snapshot. ``device``: the run's CUDA device ("cuda:1") to prefer."""

    DEFAULT_CSS = """
    GpuPanel { height: auto; min-height: 4; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.snapshot: GpuSnapshot | None = None
        self.device: str = ""
        self.torch_memory: dict | None = None
        self.run_cards: tuple[int, ...] = ()
        """NVML indices of the run's cards, from its ``started`` event (several cards: one rank a card)."""

    def update_snapshot(self, snapshot: GpuSnapshot) -> None:
        self.snapshot = snapshot
        self.refresh(layout=True)

    def set_run_info(self, device: str = "", torch_memory: dict | None = None,
                     cards: list[dict] | None = None) -> None:
        """``cards``: the started event's gpus ({index, name, memory_total}); shown while no rank holds memory."""
        run_cards = tuple(int(c["index"]) for c in cards or () if isinstance(c.get("index"), int))
        if (device, torch_memory, run_cards) != (self.device, self.torch_memory, self.run_cards):
            self.device, self.torch_memory, self.run_cards = device, torch_memory, run_cards
            self.refresh(layout=True)

    def _gpus_to_show(self) -> list[GpuInfo]:
        snap = self.snapshot
        assert snap is not None
        mine = snap.run_gpus()
        if len(self.run_cards) > 1:  # every card of a several-card run, also those no rank has reached yet
            mine_idx = {g.index for g in mine}
            listed = [g for g in snap.gpus if g.index in self.run_cards or g.index in mine_idx]
            if listed:
                return listed
        if mine:
            return mine
        if self.device.startswith("cuda"):
            idx = self.device.partition(":")[2]
            idx = int(idx) if idx.isdigit() else 0
            chosen = [g for g in snap.gpus if g.cuda_index == idx]
            if chosen:
                return chosen
        return list(snap.gpus)

    def get_content_height(self, container, viewport, width: int) -> int:
        return len(self._lines(width))

    def render(self) -> RenderResult:
        return Text("\n").join(self._lines(self.content_region.width or self.size.width))

    def _lines(self, width: int) -> list[Text]:
        width = max(width, 20)
        snap = self.snapshot
        if snap is None:
            return [Text("sampling GPUs…", style="dim")]
        if not snap.gpus:
            return self._no_gpu_lines(snap, width)
        lines: list[Text] = []
        shown = gpus = self._gpus_to_show()
        if len(gpus) > 1 and (len(self.run_cards) > 1 or len(snap.run_gpus()) > 1):
            lines = self._card_lines(snap, gpus, width)
            gpus = []
        for n, g in enumerate(gpus):
            if n:
                lines.append(Text(""))
            label = f"cuda:{g.cuda_index}" if g.cuda_index is not None else f"GPU {g.index}"
            name = (g.name or "N/A").removeprefix("NVIDIA ")
            lines.append(Text.assemble((label, "bold"), " ", (name[: max(0, width - len(label) - 1)], "")))
            used, total = g.memory_used, g.memory_total
            mem_text = f" {_gib(used)}/{_gib(total)} GiB"
            lines.append(Text.assemble("mem ", bar(g.memory_fraction, width - 4 - len(mem_text)), mem_text))
            run_here = g.process_memory(snap.run_pids) if snap.run_pids else None
            if snap.run_pids:
                frac = run_here / total if run_here is not None and total else None
                run_text = f" {_gib(run_here)} GiB"
                lines.append(Text.assemble("run ", bar(frac, width - 4 - len(run_text)), run_text))
            power = f"{_na(g.power, '{:.0f}')}/{_na(g.power_limit, '{:.0f}')} W"
            lines.append(Text.assemble(
                "util ", (_na(g.utilization, "{}%"), _level_style(g.utilization, 101, 101, "bold")),
                "  ", (_na(g.temperature, "{}°C"), _level_style(g.temperature, 80, 88)), "  ", power))
        hidden = len(snap.gpus) - len(shown)
        if hidden > 0:
            lines.append(Text(f"+{hidden} more GPU{'s' if hidden > 1 else ''} visible", style="dim"))
        cards_mode = shown and not gpus  # several cards: the ranks' own memory is shown, not rank 0's torch peak
        if self.torch_memory and self.torch_memory.get("peak_allocated_gb") is not None and not cards_mode:
            text = f"torch peak {self.torch_memory['peak_allocated_gb']:.2f} GiB"
            if self.torch_memory.get("reserved_gb") is not None:
                text += f" (rsv {self.torch_memory['reserved_gb']:.2f})"
            lines.append(Text(text, style="dim", overflow="ellipsis", no_wrap=True))
        return lines

    def _card_lines(self, snap: GpuSnapshot, gpus: list[GpuInfo], width: int) -> list[Text]:
        """A run on several cards: two lines a card (name and utilisation; each rank's process memory, or the
        card's memory while no rank holds any), so 4 cards fit the side panel at 80x24."""
        lines: list[Text] = []
        if len(gpus) > 4:  # 8 cards: one line a card (memory as text), so the panel still fits 80x24
            for g in gpus:
                procs = snap.run_processes(g) if snap.run_pids else []
                who, used = procs[0] if procs else ("mem", g.memory_used)
                total = "N/A" if g.memory_total is None else f"{g.memory_total / 1024**3:.0f}"
                line = Text.assemble((f"GPU {g.index} ", "bold"),
                                     (f"{_na(g.utilization, '{}%'):>4}", _level_style(g.utilization, 101, 101)),
                                     f" {who} {_gib(used)}/{total} GiB", no_wrap=True, overflow="ellipsis")
                line.truncate(width, overflow="ellipsis")
                lines.append(line)
            return lines
        for g in gpus:
            label = f"GPU {g.index}"
            name = (g.name or "N/A").removeprefix("NVIDIA ")
            util = f" {_na(g.utilization, '{}%')}"
            room = max(0, width - len(label) - 1 - len(util))
            head = Text.assemble((label, "bold"), " ", (name[:room].ljust(room), ""),
                                 (util, _level_style(g.utilization, 101, 101, "bold")))
            lines.append(head)
            procs = snap.run_processes(g) if snap.run_pids else []
            total = g.memory_total
            for who, used in procs or [("mem", g.memory_used)]:
                frac = used / total if used is not None and total else None
                text = f" {_gib(used)}/{_gib(total)} GiB"
                lines.append(Text.assemble(who + " ", bar(frac, width - len(who) - 1 - len(text)), text))
        return lines

    def _no_gpu_lines(self, snap: GpuSnapshot, width: int) -> list[Text]:
        lines = [Text("no NVIDIA GPU", style="bold yellow")]
        if snap.error:  # wrapped at its words: 'no NVIDIA driver on this machine' read '... on this mach…'
            lines += [Text(line, style="dim") for line in textwrap.wrap(snap.error, width)[:3]]
        if snap.host is not None:
            text = f" {_gib(snap.host.used)}/{_gib(snap.host.total)} GiB"
            lines.append(Text.assemble("host ", bar(snap.host.fraction, width - 5 - len(text)), text))
        else:
            lines.append(Text("host memory N/A", style="dim"))
        if self.torch_memory and self.torch_memory.get("peak_allocated_gb") is not None:
            lines.append(Text(f"torch peak {self.torch_memory['peak_allocated_gb']:.2f} GiB", style="dim"))
        return lines


def _gib(n: int | None) -> str:
    if n is None:
        return "N/A"
    return f"{n / 1024**3:.1f}"


def _level_style(value: float | None, warn: float, hot: float, normal: str = "") -> str:
    if value is None:
        return "dim"
    if value >= hot:
        return "bold red"
    if value >= warn:
        return "yellow"
    return normal


__all__ = ["GpuPanel", "GpuSampled", "bar", "format_bytes"]
