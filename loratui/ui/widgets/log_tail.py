"""The newest lines of a log, as many as fit (no scrolling, no growth), long ones wrapped so they read whole; a
progress bar's line shows its newest state."""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.app import RenderResult
from textual.widget import Widget


class LogTail(Widget):
    DEFAULT_CSS = """
    LogTail { height: 5; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None):
        super().__init__(id=id, classes=classes)
        self.lines: list[str] = []

    def set_lines(self, lines: list[str]) -> None:
        self.lines = [shown_line(line) for line in lines]
        self.refresh()

    def render(self) -> RenderResult:
        height = max(1, self.content_region.height or self.size.height)
        width = max(1, self.content_region.width or self.size.width)
        return Text("\n".join(tail_rows(self.lines, width, height)), no_wrap=True, overflow="crop")


def tail_rows(lines: list[str], width: int, height: int) -> list[str]:
    """The newest ``height`` rows of ``lines`` wrapped at ``width`` cells: a long line ('finished at step 30: saved
    to /a/long/path') is read whole, on as many rows as it needs, instead of cut at the pane's edge."""
    rows: list[str] = []
    for line in reversed(lines):
        wrapped = _wrap(line.expandtabs(4), width)
        rows[:0] = wrapped
        if len(rows) >= height:
            break
    return rows[-height:]


def _wrap(line: str, width: int) -> list[str]:
    """``line`` in rows of at most ``width`` cells, broken at a space where one is near, else anywhere."""
    out: list[str] = []
    while cell_len(line) > width:
        cut = width
        while cut > 1 and cell_len(line[:cut]) > width:
            cut -= 1
        space = line.rfind(" ", 0, cut + 1)
        if space > width // 2:
            cut = space
        out.append(line[:cut].rstrip())
        line = line[cut:].lstrip(" ")
    out.append(line)
    return out


def shown_line(line: str) -> str:
    """What a terminal shows for ``line``: progress bars rewrite themselves with carriage returns
    ('Map: 10%\rMap: 55%\r'), and the whole string would show the oldest state first, so the pane looked stuck."""
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    return line.rstrip()
