"""Help (the key bindings of the app and of the screen it was opened from) and the error modal."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Label, Static

from loratui.core.errors import LoratuiError

INTRO = (
    "loratui fine-tunes language models with LoRA and QLoRA. Set up a run, launch it, watch it in the monitor; "
    "runs keep going when you quit or lose the SSH session. ctrl+p opens the command palette: every action of "
    "the screen you are on, and every screen, by name."
)

TIPS = [
    ("tab / shift+tab", "next / previous field"),
    ("esc", "leave a field, so that letter keys work"),
    ("enter / space", "open a choice list, toggle a box"),
    ("ctrl+p", "command palette: every action by name"),
]


#: Textual's own screen bindings, covered by the "Moving around" tips
GENERIC_ACTIONS = {"app.focus_next", "app.focus_previous", "screen.copy_text", "help_quit"}


def _key_name(app: Any, binding: Binding) -> str:
    try:
        return app.get_key_display(binding)
    except Exception:
        return binding.key


def class_bindings(node: Any) -> list[Binding]:
    """The bindings ``node``'s class and its bases declare (``BINDINGS``), the class's own first."""
    out: list[Binding] = []
    for cls in type(node).__mro__:
        out += Binding.make_bindings(cls.__dict__.get("BINDINGS", []))
    return out


def binding_rows(app: Any, node: Any) -> list[tuple[str, str]]:
    """(keys, description) for the described bindings of ``node``, keys of one action joined by ' / '."""
    by_what: dict[str, list[str]] = {}  # a letter and a function key doing the same thing share a row
    desc: dict[str, str] = {}
    for b in class_bindings(node):
        if not b.description or b.system or b.action in GENERIC_ACTIONS:
            continue
        by_what.setdefault(b.description, [])
        name = _key_name(app, b)
        if name not in by_what[b.description]:
            by_what[b.description].append(name)
        if desc.get(b.description, b.description) == b.description:  # the first tooltip wins
            desc[b.description] = f"{b.description}: {b.tooltip}" if b.tooltip else b.description
    return [(" / ".join(keys), desc[what]) for what, keys in by_what.items()]


def keys_table(rows: list[tuple[str, str]]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), pad_edge=False)
    table.add_column(style="bold #87afff", no_wrap=True, min_width=14)
    table.add_column()
    for keys, what in rows:
        table.add_row(keys, what)
    return table


class HelpScreen(ModalScreen):
    """Key bindings: global ones, then those of the screen below."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "Close")]
    DEFAULT_CLASSES = "dialog"

    def __init__(self, under: Screen | None = None) -> None:
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box wide", id="help-box"):
            yield Label("Help", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(INTRO, classes="help-intro")
                under = self.under
                if under is not None:
                    rows = binding_rows(self.app, under)
                    if rows:
                        title = getattr(under, "HELP_TITLE", None) or type(under).__name__.replace("Screen", "")
                        yield Static(Text(f"{title} screen", style="bold"), classes="help-section")
                        yield Static(keys_table(rows))
                yield Static(Text("Everywhere", style="bold"), classes="help-section")
                yield Static(keys_table(binding_rows(self.app, self.app)))
                yield Static(Text("Moving around", style="bold"), classes="help-section")
                yield Static(keys_table(TIPS))
                help_text = getattr(under, "HELP_TEXT", None)
                if help_text:
                    yield Static(Text("About this screen", style="bold"), classes="help-section")
                    yield Static(help_text)
            yield Static("up/down scroll  esc close", classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)


def describe_error(error: BaseException | str) -> tuple[str, str | None]:
    """(one-line message, hint) for any error."""
    if isinstance(error, LoratuiError):
        msg = f"{error.field}: {error.message}" if error.field else error.message
        return " ".join(msg.split()), error.hint
    if isinstance(error, str):
        return " ".join(error.split()), None
    text = " ".join(str(error).split())
    name = type(error).__name__
    line = f"{name}: {text}" if text else name
    if len(line) > 400:
        line = line[:397] + "..."
    return line, "an unexpected error; details are in the app log (textual console)"


class ErrorModal(ModalScreen):
    """A failed action: the one-line message, the hint, and OK."""

    BINDINGS = [Binding("escape,enter,space", "close", "Close", show=False)]
    DEFAULT_CLASSES = "dialog"

    def __init__(self, error: BaseException | str, title: str = "Error") -> None:
        super().__init__()
        self.error = error
        self.message, self.hint = describe_error(error)
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box error-box"):
            yield Label(self.title_text, classes="dialog-title error-title")
            yield Static(self.message, id="error-message")
            if self.hint:
                yield Static(Text.assemble(("hint: ", "bold"), self.hint), id="error-hint")
            yield Button("OK", id="error-ok", variant="error", compact=True)

    def on_mount(self) -> None:
        self.query_one("#error-ok", Button).focus()

    def on_button_pressed(self) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
