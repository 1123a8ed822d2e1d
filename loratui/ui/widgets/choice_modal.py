"""A modal list to pick one item from (a study, an adapter, a file); enter picks, escape cancels (None)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option


class ChoiceModal(ModalScreen[str | None]):
    DEFAULT_CSS = """
    ChoiceModal { align: center middle; }
    ChoiceModal > Vertical { width: 70; max-width: 95%; height: auto; max-height: 80%; padding: 1 2;
                             border: thick $accent 80%; background: $surface; }
    ChoiceModal .title { text-style: bold; margin-bottom: 1; }
    ChoiceModal .body { color: $text-muted; margin-bottom: 1; }
    ChoiceModal OptionList { height: auto; max-height: 16; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, choices: list[tuple[str, str]], *, body: str = ""):
        """``choices``: (value, text shown)."""
        super().__init__()
        self.title_text, self.choices, self.body = title, choices, body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title")
            if self.body:
                yield Static(self.body, classes="body", markup=False)
            yield OptionList(*[Option(text, id=value) for value, text in self.choices])

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
