"""The live side panel of the setup screen: trainable parameters, memory estimate, whether it fits the GPU."""

from __future__ import annotations

import re
import time
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.timer import Timer
from textual.widgets import Static

from loratui.core.config import RunConfig
from loratui.core.devices import DevicePlan, plan_devices, rows_this_machine_runs
from loratui.core.errors import LoratuiError
from loratui.ui.messages import EstimateResult, FieldProblem

GIB = 1024**3


def gib(n: float | None) -> str:
    if n is None:
        return "-"
    v = n / GIB
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def params_line(trainable: int, total: int) -> str:
    share = 100.0 * trainable / total if total else 0.0
    return f"trainable {trainable:,} of {total:,} ({share:.2f}%)"


def short_label(label: str) -> str:
    """Row labels that fit the panel: 'this config (lora)' -> 'this (lora)', 'full fine-tuning' -> 'full FT'."""
    low = label.lower()
    if low.startswith("this config"):
        return ("this" + label[len("this config"):]).strip()
    if low.startswith("full fine-tuning"):
        return "full FT"
    return label


def problem_text(problem: FieldProblem) -> Text:
    """A field's problem in a few lines: what is wrong, the fix, and (dim) the library's own words when the first
    line does not already say them."""
    text = Text(problem.summary)
    if problem.hint:
        text.append("\nfix: ", style="bold")
        text.append(problem.hint)
    if problem.detail:
        text.append("\n" + problem.detail, style="dim")
    return text


def best_gpu(gpus: list[Any]) -> Any | None:
    """The GPU with the most free memory (None when none reports its free memory)."""
    known = [g for g in gpus if getattr(g, "memory_free", None) is not None]
    return max(known, key=lambda g: g.memory_free) if known else None


class EstimatePanel(Static):
    """Shows an :class:`EstimateResult` for a config; re-renders to its width (narrow: totals, wide: breakdown)."""

    DEFAULT_CSS = """
    EstimatePanel { height: auto; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.result: EstimateResult | None = None
        self.config: RunConfig | None = None
        self.status: str = "estimating..."
        self.problem: str | None = None
        #: the form field (its label) showing why the estimate failed; the panel then only points at it
        self.problem_at: str | None = None
        #: when the estimate under way began (the status counts its seconds: the first one takes 10 s on a CPU)
        self.pending_since: float | None = time.monotonic()
        self._ticker: Timer | None = None

    # -- state -----------------------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self._ticker = self.set_interval(1.0, self._tick)

    def show_pending(self, text: str = "estimating...") -> None:
        self.status = text
        if self.pending_since is None:
            self.pending_since = time.monotonic()
        self._render_now()

    def _tick(self) -> None:
        if self.pending_since is not None:
            self._render_now()

    def _status_text(self) -> str:
        """'estimating... 4 s', and while nothing was ever shown, what the first estimate is doing."""
        if self.pending_since is None or not self.status:
            return self.status
        waited = int(time.monotonic() - self.pending_since)
        text = f"{self.status} {waited} s" if waited >= 1 else self.status
        if self.result is None and waited >= 2:
            text += " (the first one reads the model and samples the data)"
        return text

    def set_problem(self, problem: str | None) -> None:
        """A line under the title while the form is invalid (the numbers are for the last valid values)."""
        if problem != self.problem:
            self.problem = problem
            self._render_now()

    def show_result(self, result: EstimateResult, config: RunConfig, problem_at: str | None = None) -> None:
        self.result, self.config, self.status, self.problem_at = result, config, "", problem_at
        self.pending_since = None
        self._render_now()

    def on_resize(self) -> None:
        self._render_now()

    # -- rendering ---------------------------------------------------------------------------------------------

    def _render_now(self) -> None:
        self.update(self.build(self.size.width or 30))

    def build(self, width: int) -> RenderableType:
        parts: list[RenderableType] = []
        head = Text("Parameters", style="bold")
        if self.status:
            head.append(f"  {self._status_text()}", style="dim italic")
        parts.append(head)
        if self.problem:
            parts.append(Text(self.problem, style="yellow"))
        r, cfg = self.result, self.config
        if r is None:
            return Group(*parts)
        if r.problem is not None:  # said once: under its field (or here when that field is not on the form)
            if self.problem_at:
                parts.append(Text(f"waiting for a {self.problem_at} it can read (see the form)", style="dim"))
            else:
                parts.append(problem_text(r.problem))
                parts[-1].stylize("red", 0, len(r.problem.summary))
        elif r.params_error:
            parts.append(Text(r.params_error, style="red"))
        elif r.trainable is not None and r.total is not None:
            parts.append(Text(params_line(r.trainable, r.total)))
        if r.problem is None and not (r.params_error and r.params_error == r.memory_error):  # not said twice
            parts.append(Text(""))
            parts.extend(self._memory_parts(r, width))
        parts.append(Text(""))
        parts.append(Text("GPU", style="bold"))
        parts.extend(self._gpu_lines(r, cfg, width))
        return Group(*parts)

    def _memory_parts(self, r: EstimateResult, width: int) -> list[RenderableType]:
        """The memory estimate: a row each for this config, full fine-tuning and QLoRA, and what they are for."""
        parts: list[RenderableType] = [Text("Memory estimate (GiB)", style="bold")]
        if r.memory_error:
            parts.append(Text(r.memory_error, style="red"))
        elif r.rows:
            # no NVIDIA GPU: QLoRA cannot run here
            rows = rows_this_machine_runs(r.rows, gpu=not (r.gpus is not None and not r.gpus and not r.gpu_error))
            parts.append(self._table(rows, r.gpus or [], wide=width >= 56))
            if len(rows) < len(r.rows):
                parts.append(Text("(QLoRA: needs an NVIDIA GPU)", style="dim"))
            # which device, precision and memory the numbers are for ("estimated for CPU, fp32, host memory")
            basis = getattr(r.rows[0], "basis", "")
            if basis:
                parts.append(Text(basis, style="dim"))
            note = getattr(r.rows[0], "tokens_note", "")
            if "assumed" in note:  # the data could not be sampled: the batch was taken at max_length
                parts.append(Text(note, style="yellow"))
        return parts

    def _table(self, rows: list[Any], gpus: list[Any], wide: bool) -> Table:
        """Rows: this config, full fine-tuning, QLoRA. Wide: the breakdown; narrow: weights and total.
        With a GPU, a last column says whether each fits its free memory."""
        cards, gpu = self._fit_cards(gpus), best_gpu(gpus)
        table = Table(box=None, padding=(0, 0, 0, 1), pad_edge=False, show_edge=False, expand=False,
                      header_style="dim")
        table.add_column("", no_wrap=True, overflow="ellipsis", max_width=13)
        columns = [("weight", "weights"), ("grads", "grads"), ("optim", "optimizer"), ("activ", "activations"),
                   ("other", "overhead")] if wide else ([] if gpu is not None else [("weights", "weights")])
        for head, _ in columns:
            table.add_column(head, justify="right", no_wrap=True)
        table.add_column("total", justify="right", no_wrap=True)
        if gpu is not None:
            table.add_column("fits", justify="left", no_wrap=True)
        for i, row in enumerate(rows):
            cells: list[Any] = [short_label(str(row.label))]
            cells += [gib(getattr(row, attr)) for _, attr in columns]
            cells.append(gib(row.total))
            if gpu is not None:
                if cards:  # each chosen card holds this row's per-card share (DDP: all of it)
                    need = per_card(row, row_strategy(self._plan, row, cards, self.config, first=i == 0),
                                    len(cards))
                    fits = all(need <= c.memory_free for c in cards)
                else:
                    fits = row.total <= gpu.memory_free
                cells.append(Text("yes" if fits else "no", style="green" if fits else "red"))
            table.add_row(*cells, style="bold" if i == 0 else "")
        return table

    # -- the cards (issue 7) -------------------------------------------------------------------------------------

    @property
    def _plan(self) -> DevicePlan | None:
        """The cards this config trains on, among the ones the estimate saw (None: no plan, or a bad train.gpus)."""
        r, cfg = self.result, self.config
        if r is None or cfg is None or not r.gpus:
            return None
        plan, _ = device_plan(cfg, r.gpus)
        return plan if plan is not None and plan.gpus else None

    def _fit_cards(self, gpus: list[Any]) -> list[Any]:
        """The chosen cards that report their free memory (the 'fits' column compares against each)."""
        plan = self._plan
        if plan is None:
            return []
        by_index = {g.index: g for g in gpus}
        cards = [by_index[i] for i in plan.gpus if i in by_index]
        return cards if cards and all(getattr(c, "memory_free", None) is not None for c in cards) else []

    def _gpu_lines(self, r: EstimateResult, cfg: RunConfig | None, width: int = 30) -> list[Text]:
        """The box's cards (index, name, free memory), the ones this config trains on marked, each with whether
        the per-card estimate fits it; the strategy and the effective batch."""
        if r.gpu_error or not r.gpus or cfg is None:
            return self._one_gpu_lines(r, cfg)
        plan, problem = device_plan(cfg, r.gpus)
        if len(r.gpus) == 1 and not problem:
            return self._one_gpu_lines(r, cfg)
        width = max(24, width)
        lines: list[Text] = []
        if problem:
            lines.append(Text(short_gpus_problem(problem), style="bold red"))
        chosen = set(plan.gpus) if plan is not None else set()
        row0 = r.rows[0] if r.rows else None
        cards = [g for g in r.gpus if g.index in chosen]
        strategy = row_strategy(plan, row0, cards, cfg, first=True) if plan is not None else "none"
        need = per_card(row0, strategy, len(cards)) if row0 is not None and cards else None
        if plan is not None and need is not None:
            how = "one process" if strategy == "none" else f"{strategy.upper()} x {len(cards)}"
            lines.append(Text(f"{how}: {gib(need)} GiB a card", style="bold"))
            if strategy != "none":
                lines.append(Text("a full replica on each card" if strategy == "ddp" else
                                  "weights, grads, optim. sharded", style="dim"))
        for g in r.gpus:
            mine = g.index in chosen
            free = f" {gib(g.memory_free)} free" if getattr(g, "memory_free", None) is not None else " free N/A"
            verdict: Text = Text("")
            if mine and need is not None and getattr(g, "memory_free", None) is not None:
                ok = need <= g.memory_free
                verdict = Text(" ✓" if ok else " ✗", style="green" if ok else "bold red")
            head = f"{'▸' if mine else ' '}{g.index} "
            name = (g.name or "N/A").removeprefix("NVIDIA ")
            room = max(3, width - len(head) - len(free) - 2)  # 2: the fits mark of a chosen card
            if len(name) > room:
                name = name[: room - 1] + "…"
            lines.append(Text.assemble((head, "bold" if mine else "dim"), (name.ljust(room), "" if mine else "dim"),
                                       (free, "" if mine else "dim"), verdict))
        if plan is not None:
            for note in plan.notes:
                lines.append(Text(note, style="yellow"))
            lines.append(Text(plan.batch_line(), style="dim"))
            short = [g for g in cards if need is not None and getattr(g, "memory_free", None) is not None
                     and need > g.memory_free]
            if short:
                which = ", ".join(str(g.index) for g in short)
                lines.append(Text(f"does not fit card{'s' if len(short) > 1 else ''} {which}: try qlora, a smaller "
                                  "batch, gradient checkpointing" + (" or fsdp" if strategy == "ddp" else ""),
                                  style="bold red"))
        return lines

    def _one_gpu_lines(self, r: EstimateResult, cfg: RunConfig | None) -> list[Text]:
        lines: list[Text] = []
        if r.gpu_error:
            return [Text(f"GPU query failed: {r.gpu_error}", style="yellow")]
        if r.gpus is None:
            return [Text("GPU status unavailable", style="dim")]
        if not r.gpus:
            lines.append(Text("no NVIDIA GPU found: training runs on CPU", style="yellow"))
            if cfg is not None and cfg.quantized:
                lines.append(Text(f"{cfg.method.kind} needs an NVIDIA GPU (bitsandbytes)", style="red"))
            return lines
        gpu = best_gpu(r.gpus)
        if gpu is None:
            first = r.gpus[0]
            return [Text(f"GPU {first.index}: {first.name or 'N/A'}"), Text("free memory N/A", style="yellow")]
        lines.append(Text(f"GPU {gpu.index}: {gpu.name or 'N/A'}", overflow="ellipsis", no_wrap=True))
        lines.append(Text(f"{gib(gpu.memory_free)} of {gib(gpu.memory_total)} GiB free"))
        if r.rows:
            need = r.rows[0].total
            if need <= gpu.memory_free:
                lines.append(Text(f"fits: needs {gib(need)} GiB", style="green"))
            else:
                lines.append(Text(f"does not fit: needs {gib(need)} GiB", style="bold red"))
                lines.append(Text("try qlora, a smaller batch or gradient checkpointing", style="red"))
        if len(r.gpus) > 1:
            lines.append(Text(f"{len(r.gpus)} GPUs; shown: the one with most free memory", style="dim"))
        return lines


def device_plan(cfg: RunConfig, gpus: list[Any]) -> tuple[DevicePlan | None, str | None]:
    """The cards ``cfg`` trains on among ``gpus`` (:func:`loratui.core.devices.plan_devices`), or the one-line
    reason train.gpus cannot be met."""
    try:
        return plan_devices(cfg, list(gpus)), None
    except LoratuiError as err:
        return None, str(err)
    except Exception as err:  # a GPU object without an index: show the cards, not a crash
        return None, f"GPU plan failed: {err}"


def short_gpus_problem(problem: str) -> str:
    """The ConfigError of a bad train.gpus without the field's name and the list of cards (Setup lists them)."""
    text = re.sub(r" \((pick from: )?\d+: [^)]*\)", "", problem.removeprefix("train.gpus: "))
    return text


def row_strategy(plan: DevicePlan | None, row: Any, cards: list[Any], cfg: RunConfig | None, first: bool) -> str:
    """none | ddp | fsdp for a row of the estimate on the chosen cards; ``auto`` decided as the engine does
    (loratui.train.distributed.strategy): FSDP for full fine-tuning whose single-card estimate passes 90 % of a
    card, else DDP."""
    if plan is None or plan.world_size <= 1:
        return "none"
    if plan.distributed in ("ddp", "fsdp"):
        return plan.distributed
    full = (cfg is not None and cfg.method.kind == "full") if first else str(getattr(row, "label", "")).lower(
    ).startswith("full")
    sizes = [c.memory_total for c in cards if getattr(c, "memory_total", None)]
    if full and row is not None and sizes and row.total > 0.9 * min(sizes):
        return "fsdp"
    return "ddp"


def per_card(row: Any, strategy: str, cards: int) -> int:
    """Bytes a card holds: DDP (and one process) a full replica, the single-card estimate; FSDP shards weights,
    gradients and optimizer states over the cards (the estimate's own rule: ``MemoryRow.per_card``, which knows
    what FSDP gathers whole and keeps per card)."""
    return int(row.per_card(strategy, cards))
