"""Small modal screens: a yes/no confirmation and a one-line text prompt."""

from __future__ import annotations

from textual import events, on
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from loratui.ui.widgets.form import FormInput

MODAL_CSS = """
ConfirmModal, PromptModal { align: center middle; }
ConfirmModal > Vertical, PromptModal > Vertical {
    width: 64; max-width: 95%; height: auto; padding: 1 2;
    border: thick $warning 80%; background: $surface;
}
PromptModal > Vertical { border: thick $accent 80%; }
ConfirmModal .title, PromptModal .title { text-style: bold; margin-bottom: 1; width: 100%; }  /* wraps: whole */
ConfirmModal .body, PromptModal .body { margin-bottom: 1; }
ConfirmModal Horizontal, PromptModal Horizontal { height: auto; align-horizontal: right; }
ConfirmModal Button, PromptModal Button { margin-left: 1; }
"""


class ConfirmModal(ModalScreen[bool]):
    """Ask before doing something that can't be undone. y/enter confirms, n/escape cancels."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str = "", *, yes: str = "Yes", no: str = "Cancel", danger: bool = True):
        super().__init__()
        self.title_text, self.body, self.yes, self.no, self.danger = title, body, yes, no, danger

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title", markup=False)
            if self.body:
                yield Static(self.body, classes="body", markup=False)
            with Horizontal():  # Text, not markup: '[n]' read as a style tag showed nothing
                yield Button(Text(f"{self.no} [n]"), id="no")
                yield Button(Text(f"{self.yes} [y]"), id="yes", variant="error" if self.danger else "primary")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class PromptModal(ModalScreen[str | None]):
    """Ask for one line of text (a folder path). Enter accepts, escape cancels (None).

    The placeholder is shown as an example ("e.g. ..."), and Enter on an empty box says so instead of closing:
    a dialog that looked filled in and closed silently queued nothing. Keys that arrive before the box has the focus
    (typed right after the key that opened the dialog, on a busy app) go into the box, in order."""

    DEFAULT_CSS = MODAL_CSS + """
    PromptModal #prompt-note { color: $warning; height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, *, value: str = "", placeholder: str = "", body: str = ""):
        super().__init__()
        self.title_text, self.value, self.placeholder, self.body = title, value, placeholder, body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title")
            if self.body:
                yield Static(self.body, classes="body", markup=False)
            yield FormInput(self.value, placeholder=f"e.g. {self.placeholder}" if self.placeholder else "",
                        id="prompt-input")
            yield Static("", id="prompt-note", markup=False)
            with Horizontal():
                yield Button(Text("Cancel [esc]"), id="cancel")
                yield Button(Text("OK [enter]"), id="ok", variant="primary")

    def on_key(self, event: events.Key) -> None:
        """A key sent to the dialog itself: the box did not have the focus yet when it was read."""
        box = self.query_one(Input)
        if event.key == "enter":
            self._accept(box.value)
        elif event.key == "backspace":
            box.action_delete_left()
        elif event.is_printable and event.character:
            box.insert_text_at_cursor(event.character)
        else:
            return
        event.stop()
        event.prevent_default()

    def _accept(self, value: str) -> None:
        if value.strip():
            self.dismiss(value.strip())
            return
        example = f" (e.g. {self.placeholder})" if self.placeholder else ""
        self.query_one("#prompt-note", Static).update(f"Nothing typed yet: type a value{example}, or esc to cancel.")
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self._accept(event.value)

    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self._accept(self.query_one(Input).value)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
