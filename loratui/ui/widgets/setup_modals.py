"""Modal screens of the setup screen: pick a sample config, pick target modules, show the data preview. Each
dismisses with its answer (None when cancelled with Escape). Asking for a path or a yes/no uses the app's one
prompt and one confirm modal (``loratui.ui.widgets.modals``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.segment import Segment
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widgets import Checkbox, Label, OptionList, SelectionList, Static
from textual.widgets.option_list import OptionDoesNotExist
from textual.widgets.option_list import Option
from textual.widgets.selection_list import Selection

OTHER_FILE = "__other__"


class MarkedSelectionList(SelectionList):
    """A selection list whose box is empty when an item is not selected (Textual draws a dim X either way,
    which reads as 'selected' in a 256-colour terminal)."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        if selection.value in self.selected:
            return strip
        segments = list(strip)
        if len(segments) > 1 and segments[1].text == Checkbox.BUTTON_INNER:
            segments[1] = Segment(" ", segments[1].style)
            return Strip(segments, strip.cell_length)
        return strip


class Dialog(ModalScreen):
    """Base: a bordered box in the middle of the screen, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CLASSES = "dialog"

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfigPicker(Dialog):
    """Lists the sample configs; the last entry asks for any other file (dismisses with its path).

    Enter is a priority key and "Other file..." opens the path prompt on top of this dialog, before the keys
    typed after Enter are routed: the start of a path typed right away lands in the prompt (it went to the list,
    or to Setup's fields and keys while the picker closed and the prompt had not opened)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("enter", "pick", "Load", priority=True)]

    def __init__(self, files: list[Path]) -> None:
        super().__init__()
        self.files = files

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Load a config", classes="dialog-title")
            options = [Option(Text.assemble((p.stem, "bold"), ("  " + _first_comment(p), "dim")), id=str(p))
                       for p in self.files]
            if not options:
                options.append(Option(Text("no sample configs found", style="dim"), id="none", disabled=True))
            options.append(Option("Other file...", id=OTHER_FILE))
            yield OptionList(*options, id="config-list")
            yield Static("enter load  esc cancel", classes="dialog-help")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self._choose(event.option.id)

    def action_pick(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is not None:
            self._choose(options.get_option_at_index(options.highlighted).id)

    def _choose(self, choice: str | None) -> None:
        if choice == "none":
            return
        if choice != OTHER_FILE:
            self.dismiss(choice)
            return
        from loratui.ui.widgets.modals import PromptModal

        self.app.push_screen(PromptModal("Load a config from a YAML file", placeholder="path/to/config.yaml"),
                             lambda path: self.dismiss(path) if path else None)  # esc: back to the list


def _first_comment(path: Path, most: int = 110) -> str:
    """The first sentence of the file's opening comment, whole words only (it wraps in the list: a cut at 60
    characters read 'LoRA r=8 alp')."""
    words: list[str] = []
    try:
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if not line.startswith("#"):
                    break
                words += line.lstrip("# ").split()
    except OSError:
        return ""
    out = ""
    for word in words:
        if len(out) + len(word) + 1 > most:
            return out + " …"
        out = f"{out} {word}" if out else word
        if word.endswith(".") and not word.endswith("..."):
            break
    return out


class TargetPicker(Dialog):
    """The model's own linear layers as a selection list; dismisses with the chosen names."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("enter", "done", "Use these", priority=True),
        Binding("a", "all", "All/none"),
    ]

    def __init__(self, layers: list[str], selected: list[str] | str | None, model: str) -> None:
        super().__init__()
        self.layer_names = layers
        chosen = set(layers) if selected == "all-linear" else set(selected or [])
        self.selected = chosen
        self.model = model

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(f"Target modules of {self.model}", classes="dialog-title")
            yield MarkedSelectionList(*[Selection(n, n, n in self.selected) for n in self.layer_names], id="layer-list")
            yield Static("space toggle  a all/none  enter use  esc cancel", classes="dialog-help")

    def action_all(self) -> None:
        sl = self.query_one(SelectionList)
        if len(sl.selected) == len(self.layer_names):
            sl.deselect_all()
        else:
            sl.select_all()

    def action_done(self) -> None:
        chosen = list(self.query_one(SelectionList).selected)
        self.dismiss([n for n in self.layer_names if n in chosen])


LOSS_STYLE = "bold black on #87d787"
PROMPT_STYLE = "#a8a8a8"


def render_example(example: Any) -> Text:
    text = Text()
    for piece, trains in example.segments:
        text.append(piece, style=LOSS_STYLE if trains else PROMPT_STYLE)
    return text


def example_head(i: int, ex: Any) -> Text:
    """'example 1: 104 tokens, 23 carry loss (truncated)' plus the label for classification."""
    head = Text(f"example {i}: {ex.n_tokens} tokens", style="bold underline")
    extra = []
    if getattr(ex, "loss_tokens", 0):
        extra.append(f"{ex.loss_tokens} carry loss")
    if getattr(ex, "label", None) is not None:
        extra.append(f"label {ex.label}")
    if getattr(ex, "truncated", False):
        extra.append("truncated to max length")
    if extra:
        head.append(", " + ", ".join(extra), style="bold")
    return head


class PreviewModal(Dialog):
    """The first examples as the model sees them: highlighted tokens carry the loss, grey ones are masked."""

    BINDINGS = [Binding("escape,q,enter", "cancel", "Close")]

    def __init__(self, examples: list[Any], title: str) -> None:
        super().__init__()
        self.examples, self.title_text = examples, title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box wide"):
            yield Label(self.title_text, classes="dialog-title")
            legend = Text.assemble(("trains", LOSS_STYLE), " = tokens that carry loss   ",
                                   ("prompt", PROMPT_STYLE), " = masked")
            yield Static(legend, classes="dialog-help")
            with VerticalScroll(id="preview-scroll"):
                if not self.examples:
                    yield Static("no examples", classes="dim")
                for i, ex in enumerate(self.examples, 1):
                    yield Static(example_head(i, ex), classes="preview-head")
                    yield Static(render_example(ex), classes="preview-body")
            yield Static("up/down scroll  esc close", classes="dialog-help")

    def on_mount(self) -> None:
        self.query_one("#preview-scroll").focus()
