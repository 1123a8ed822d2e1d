"""The Monitor's learning-rate panel: the run's planned schedule over all its steps, in one row of block
characters, the steps done in colour, a marker at the current step and the steps to come dim. (It drew the logged
history stretched across its width: at step 1 a full bar.)"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget

from loratui.core.schedule import planned_lr

BLOCKS = "▁▂▃▄▅▆▇█"


def schedule_row(train: dict[str, Any], max_steps: int, step: int, width: int,
                 cuts: list[tuple[int, float]] = ()) -> Text:
    """``width`` cells: the planned learning rate from step 0 to ``max_steps`` (lowered where a roll-back lowered
    it: ``cuts``, see planned_lr); the cell of ``step`` reversed."""
    plan = planned_lr(train, max_steps, width, cuts)
    if not plan:
        return Text("")
    peak = max(lr for _, lr in plan) or 1.0
    here = round(min(1.0, step / max_steps) * (width - 1)) if max_steps else 0
    row = Text()
    for i, (_, lr) in enumerate(plan):
        block = BLOCKS[round((len(BLOCKS) - 1) * lr / peak)]
        row.append(block, style="bold reverse yellow" if i == here else "cyan" if i < here else "dim")
    return row


class LrSchedule(Widget):
    """One row: :func:`schedule_row` at the widget's width (nothing while the plan is unknown)."""

    DEFAULT_CSS = """
    LrSchedule { height: 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.train: dict[str, Any] = {}
        self.max_steps = 0
        self.step = 0
        self.cuts: list[tuple[int, float]] = []

    def show(self, train: dict[str, Any], max_steps: int, step: int, cuts: list[tuple[int, float]] = ()) -> None:
        cuts = list(cuts)
        if (train, max_steps, step, cuts) != (self.train, self.max_steps, self.step, self.cuts):
            self.train, self.max_steps, self.step, self.cuts = train, max_steps, step, cuts
            self.refresh()

    def render(self) -> RenderResult:
        if not self.train or not self.max_steps:
            return Text("")
        return schedule_row(self.train, self.max_steps, self.step, max(2, self.size.width), self.cuts)
