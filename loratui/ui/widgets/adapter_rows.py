"""The Adapters screen's rows and detail, as text: a run's adapter with its checkpoints under it (newest step
first), each with the step it holds, the train loss logged there and the evaluation at that step (the one fold's
figures, :func:`loratui.core.adapters.adapter_figures`), and names that keep the part telling them apart."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from loratui.core.adapters import AdapterInfo
from loratui.core.fmt import format_bytes, format_count, format_loss, logged_at
from loratui.core.step_history import StepFigures
from loratui.ui.widgets.tables import middle_ellipsis

#: (key, label, most width); the name column takes what the others leave
COLUMNS = [("name", "Adapter", 20), ("step", "Step", 6), ("loss", "Loss", 10), ("eval", "Eval", 6),
           ("base", "Base model", 24), ("r", "r", 4), ("alpha", "α", 5), ("params", "Params", 7), ("size", "Size", 10)]
#: left out, in this order, while the names would be cut (the detail below the table shows them all)
OPTIONAL = ("base", "params", "alpha", "r")


def short_model(name: str | None) -> str:
    if not name:
        return "-"
    return name.rstrip("/").split("/")[-1]


@dataclass(frozen=True)
class NameCell:
    """A row's name: ``tree`` (the branch under the run's row), ``head`` (cut in the middle when too wide) and
    ``tail`` (kept whole: 'checkpoint-120')."""

    head: str
    tail: str = ""
    tree: str = ""
    bold: bool = False
    error: bool = False

    def __str__(self) -> str:
        return self.tree + self.head + self.tail + " !" * self.error


def fit_name(cell: object, width: int) -> Text:
    """``cell`` in ``width`` cells: the head gives way first (cut in the middle, so a run's date stays), the
    checkpoint's own name last."""
    if not isinstance(cell, NameCell):
        return middle_ellipsis(cell if isinstance(cell, Text) else Text(str(cell)), width)
    fixed = len(cell.tree) + len(cell.tail) + 2 * cell.error
    head = Text(cell.head, style="bold" if cell.bold else "")
    if cell.head and len(str(cell)) > width and width - fixed >= 4:
        head = middle_ellipsis(head, width - fixed)
    elif len(str(cell)) > width:
        return middle_ellipsis(Text(str(cell)), width)
    out = Text.assemble((cell.tree, "dim"), head, cell.tail)
    if cell.error:
        out.append(" !", style="bold red")
    return out


def _group(a: AdapterInfo) -> str:
    return a.run if a.run is not None else str(a.path)


def ordered(adapters: list[AdapterInfo], figures: dict[str, StepFigures]) -> list[AdapterInfo]:
    """``adapters`` (newest first) with each run's together: its adapter, then its checkpoints, newest step first."""
    first: dict[str, int] = {}
    for i, a in enumerate(adapters):
        first.setdefault(_group(a), i)

    def key(a: AdapterInfo) -> tuple:
        f = figures.get(str(a.path))
        return first[_group(a)], a.kind == "checkpoint", -(f.step if f else -1), a.name

    return sorted(adapters, key=key)


def name_cells(adapters: list[AdapterInfo]) -> list[NameCell]:
    """Each row's name: a checkpoint under its run's adapter is '├ checkpoint-200' ('└' for the run's last), one
    without it keeps the run's name in front ('run/checkpoint-200', the run's name cut first)."""
    out = []
    for i, a in enumerate(adapters):
        err = bool(a.error)
        if a.kind != "checkpoint":
            out.append(NameCell(a.name, bold=a.kind == "adapter", error=err))
            continue
        run_row = next((b for b in reversed(adapters[:i]) if _group(b) != a.run or b.kind != "checkpoint"), None)
        if run_row is not None and run_row.kind == "adapter" and run_row.run == a.run:
            last = i + 1 == len(adapters) or adapters[i + 1].run != a.run
            out.append(NameCell("", a.path.name, tree="└ " if last else "├ ", error=err))
        else:
            out.append(NameCell(f"{a.run}/", a.path.name, error=err))
    return out


def cells(a: AdapterInfo, name: NameCell, f: StepFigures | None) -> tuple:
    alpha = "-" if a.alpha is None else f"{a.alpha:g}"
    step = str(f.step) if f else "-"
    return (name, step, loss_cell(f), format_loss(f.eval_loss if f else None),
            short_model(a.base_model), str(a.r) if a.r is not None else "-", alpha, format_count(a.trainable_params),
            format_bytes(a.size))


def loss_cell(f: StepFigures | None) -> str:
    """The table's loss: '0.160', or '0.160@5' when it was logged at an earlier step than the adapter's (as the
    Monitor says it): the row no longer passes an older loss off as its own step's."""
    if f is None or f.loss is None:
        return "-"
    return format_loss(f.loss) + logged_at(f.loss_step, f.step)


def figures_text(f: StepFigures) -> str:
    """'200 · loss 0.948 · eval 1.032 (final, 200 examples)': the detail's line (the loss logged at an earlier step
    says which)."""
    text = f"{f.step} · loss {format_loss(f.loss)}"
    if f.loss is not None and f.loss_step != f.step:
        text += f" (at step {f.loss_step})"
    if f.eval_loss is not None:
        text += f" · eval {format_loss(f.eval_loss)}"
    if f.accuracy is not None:
        text += f" · acc {f.accuracy:.3f}"
    if f.eval_final:
        text += f" (final, {f.eval_examples} examples)" if f.eval_examples else " (final)"
    elif f.eval_loss is None and f.accuracy is None:
        text += " · not evaluated"
    return text


def info_grid(a: AdapterInfo, f: StepFigures | None, exported: list) -> Table:
    """The detail's left side: where it is, its step and figures (or what is wrong), base, task, rank, exports,
    age, targets."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("path", str(a.path))
    if a.error:  # what is wrong with it before what it is
        grid.add_row(Text("error", style="red"), Text(a.error, style="red"))
    if f is not None:  # which checkpoint is which: second, so a long path never pushes it out of the pane
        grid.add_row("step", figures_text(f))
    grid.add_row("base", a.base_model or "-")
    task = a.task or "-"
    if a.peft_type:
        task += f" · {a.peft_type}"
    grid.add_row("task", task)
    rank = f"{a.r if a.r is not None else '-'} / {a.alpha if a.alpha is not None else '-'}"
    if a.trainable_params is not None:
        rank += f" · {a.trainable_params:,} params"
    grid.add_row("r / α", rank)
    if exported:  # what llama.cpp and Ollama can run, at a glance (each file with its size on the right): one line
        grid.add_row("GGUF", ", ".join(dict.fromkeys(e.kind for _, e in exported)) + " (l: try)")
    grid.add_row("created", a.created_text)
    # last: seven modules' names fold over lines, and pushed the exports and the date out of the pane at 80x24
    grid.add_row("targets", a.targets_text)
    return grid


def files_grid(a: AdapterInfo, exported: list, width: int = 0) -> Table:
    """The detail's right side: each file with its size, the total, then the GGUF exports. In ``width`` cells a long
    file name is cut in the middle, so its kind stays ('adapter_m….safetensors')."""
    ft = Table.grid(padding=(0, 1), expand=True)
    ft.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    ft.add_column(justify="right", no_wrap=True)
    sizes = [format_bytes(size) for _, size in a.files] + [format_bytes(a.size)]
    room = width - max(map(len, sizes)) - 1 if width else 0
    for fname, size in a.files:
        ft.add_row(middle_ellipsis(Text(fname), room) if 0 < room < len(fname) else fname, format_bytes(size))
    ft.add_row(Text(f"{len(a.files)} files", style="bold"), Text(format_bytes(a.size), style="bold"))
    if exported:
        ft.add_row(Text("GGUF exports (e: again)", style="bold"), "")
        for folder, e in exported:
            ft.add_row(f"{folder}/{e.path.name}", format_bytes(e.size))
    return ft
