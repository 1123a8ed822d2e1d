"""The live side panel of the setup screen: trainable parameters, memory estimate, whether it fits the GPU."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from loratui.core.config import RunConfig
from loratui.ui.messages import EstimateResult

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

    # -- state -----------------------------------------------------------------------------------------------

    def show_pending(self, text: str = "estimating...") -> None:
        self.status = text
        self._render_now()

    def set_problem(self, problem: str | None) -> None:
        """A line under the title while the form is invalid (the numbers are for the last valid values)."""
        if problem != self.problem:
            self.problem = problem
            self._render_now()

    def show_result(self, result: EstimateResult, config: RunConfig) -> None:
        self.result, self.config, self.status = result, config, ""
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
            head.append(f"  {self.status}", style="dim italic")
        parts.append(head)
        if self.problem:
            parts.append(Text(self.problem, style="yellow"))
        r, cfg = self.result, self.config
        if r is None:
            return Group(*parts)
        if r.params_error:
            parts.append(Text(r.params_error, style="red"))
        elif r.trainable is not None and r.total is not None:
            parts.append(Text(params_line(r.trainable, r.total)))
        parts.append(Text(""))
        parts.append(Text("Memory estimate (GiB)", style="bold"))
        if r.memory_error:
            parts.append(Text(r.memory_error, style="red"))
        elif r.rows:
            parts.append(self._table(r.rows, r.gpus or [], wide=width >= 56))
            # which device, precision and memory the numbers are for ("estimated for CPU, fp32, host memory")
            basis = getattr(r.rows[0], "basis", "")
            if basis:
                parts.append(Text(basis, style="dim"))
            note = getattr(r.rows[0], "tokens_note", "")
            if "assumed" in note:  # the data could not be sampled: the batch was taken at max_length
                parts.append(Text(note, style="yellow"))
        parts.append(Text(""))
        parts.append(Text("GPU", style="bold"))
        parts.extend(self._gpu_lines(r, cfg))
        return Group(*parts)

    def _table(self, rows: list[Any], gpus: list[Any], wide: bool) -> Table:
        """Rows: this config, full fine-tuning, QLoRA. Wide: the breakdown; narrow: weights and total.
        With a GPU, a last column says whether each fits its free memory."""
        gpu = best_gpu(gpus)
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
                fits = row.total <= gpu.memory_free
                cells.append(Text("yes" if fits else "no", style="green" if fits else "red"))
            table.add_row(*cells, style="bold" if i == 0 else "")
        return table

    def _gpu_lines(self, r: EstimateResult, cfg: RunConfig | None) -> list[Text]:
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
