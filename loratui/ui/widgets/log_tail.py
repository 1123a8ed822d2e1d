"""The newest lines of a log, as many as fit (no scrolling, no growth); a progress bar's line shows its newest
state."""

from __future__ import annotations

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
        shown = self.lines[-height:]
        text = Text("\n".join(line.expandtabs(4) for line in shown), no_wrap=True, overflow="ellipsis")
        text.truncate(width * height + height, overflow="ellipsis")
        return text


def shown_line(line: str) -> str:
    """What a terminal shows for ``line``: progress bars rewrite themselves with carriage returns
    ('Map: 10%\rMap: 55%\r'), and the whole string would show the oldest state first, so the pane looked stuck."""
    if "\r" in line:
        parts = [p for p in line.split("\r") if p.strip()]
        line = parts[-1] if parts else ""
    return line.rstrip()
