"""Every adapter found in the runs folder and in folders the user adds: each with the step it holds and the run's
losses there, details, files, merge, delete, copy path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from loratui.core.adapters import AdapterInfo, adapter_figures, delete_adapter, find_adapters
from loratui.core.export import exports_near
from loratui.core.fmt import format_bytes
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.widgets import adapter_rows
from loratui.ui.widgets.choice_modal import ChoiceModal
from loratui.ui.widgets.modals import ConfirmModal, PromptModal
from loratui.ui.widgets.tables import RowTable, fill_table


@dataclass
class AdaptersLoaded(Message):
    adapters: list[AdapterInfo]
    exports: dict = field(default_factory=dict)  # adapter path -> [(folder name, Exported)]: its GGUF files
    figures: dict = field(default_factory=dict)  # adapter path -> StepFigures: its step and the run's losses there

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, AdaptersLoaded)


class AdaptersScreen(LoratuiScreen):
    """The adapter browser. ``select``: an adapter folder to put the cursor on once listed."""

    DEFAULT_CSS = """
    AdaptersScreen #ad-title { height: 1; padding: 0 1; background: $boost; }
    AdaptersScreen #ad-table { height: 1fr; min-height: 5; }
    AdaptersScreen #ad-detail { height: 11; border-top: solid $primary 40%; }
    AdaptersScreen #ad-info { width: 9fr; padding: 0 1; }
    AdaptersScreen #ad-files { width: 7fr; padding: 0 0 0 1; border-left: solid $primary 30%; }
    AdaptersScreen #ad-empty { height: 1fr; content-align: center middle; color: $text-muted; display: none; }
    AdaptersScreen.-empty #ad-empty { display: block; }
    AdaptersScreen.-empty #ad-table, AdaptersScreen.-empty #ad-detail { display: none; }
    """

    #: a failed listing tries again with a back-off
    POLLERS = {"adapters": "action_refresh"}

    BINDINGS = [
        Binding("t", "try_it", "Try it"),
        Binding("l", "try_gguf", "Try GGUF", show=False),  # said beside the exports it opens
        Binding("g", "merge", "Merge"),
        Binding("e", "export", "Export GGUF"),
        Binding("delete,x", "delete", "Delete"),
        Binding("y", "copy_path", "Copy path", show=False),  # help (?) lists them: at 80 columns the footer
        Binding("f", "add_folder", "Add folder", priority=True, show=False),  # keeps the app's keys on screen
        Binding("f5,ctrl+r", "refresh", "Refresh", show=False),
    ]

    COLUMNS = adapter_rows.COLUMNS

    def __init__(self, select: Path | None = None, *, folders: list[Path] | None = None, name: str | None = None,
                 id: str | None = None):
        super().__init__(name=name, id=id)
        self._folders = [Path(f) for f in folders] if folders is not None else None
        self.extra_folders: list[Path] = []
        self.adapters: list[AdapterInfo] = []
        self.exports: dict = {}
        self.figures: dict = {}
        self._select: str | None = str(select) if select else None
        self._rows: list[tuple] = []
        self.loaded = False

    @property
    def folders(self) -> list[Path]:
        """Where to look: the runs folder plus every folder added (here or on the app)."""
        if self._folders is not None:
            base = list(self._folders)
        else:
            base = [Path(self.app.runs_dir)]
        base += [Path(p) for p in self.app.adapter_folders]
        out: list[Path] = []
        for p in [*base, *self.extra_folders]:
            if p not in out:
                out.append(p)
        return out

    def compose(self) -> ComposeResult:
        yield Static(id="ad-title")
        yield RowTable(id="ad-table")
        yield Static("No adapters found. Train one, or press f to add a folder that holds some.", id="ad-empty")
        with Horizontal(id="ad-detail"):
            with VerticalScroll(id="ad-info"):  # what does not fit 11 lines scrolls, not cut
                yield Static(id="ad-info-text")
            with VerticalScroll(id="ad-files"):
                yield Static(id="ad-files-list")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label, _ in self.COLUMNS:
            table.add_column(label, key=key)
        self._update_title()
        self.action_refresh()

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def select(self, path: Path) -> None:
        """Put the cursor on ``path`` (now if listed, else after the next refresh)."""
        self._select = str(path)
        keys = [str(a.path) for a in self.adapters]
        if self._select in keys:
            self.query_one(DataTable).move_cursor(row=keys.index(self._select), animate=False)
            self._select = None
        else:
            self.action_refresh()

    def _update_title(self) -> None:
        n = len(self.adapters)
        total = sum(a.size for a in self.adapters)
        where = ", ".join(str(f) for f in self.folders)
        text = Text.assemble(("Adapters", "bold"))
        if self.loaded:
            text.append(f"  {n} adapter{'s' * (n != 1)}, {format_bytes(total)}", style="dim")
        # f is not in the footer (at 80 columns it keeps the app's keys): said here, before the folders' paths
        text.append("  ·  f adds a folder  ·  ", style="dim")
        text.append(where)
        self.query_one("#ad-title", Static).update(text)

    # -- loading -------------------------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self._load(self.folders)

    @work(thread=True, exclusive=True, exit_on_error=False, group="adapters", description="Finding adapters")
    def _load(self, folders: list[Path]) -> None:
        adapters = find_adapters(folders)
        exports = {str(a.path): exports_near(a.path) for a in adapters}  # a checkpoint's and a loose folder's too
        figures = adapter_figures(adapters)
        if not get_current_worker().is_cancelled:
            self.post_message(AdaptersLoaded(adapter_rows.ordered(adapters, figures), exports, figures))

    @on(AdaptersLoaded)
    def _loaded(self, message: AdaptersLoaded) -> None:
        table = self.query_one(DataTable)
        current = self.selected
        self.adapters = message.adapters
        self.exports = message.exports
        self.figures = message.figures
        self.loaded = True
        keys = [str(a.path) for a in self.adapters]
        names = adapter_rows.name_cells(self.adapters)
        rows = [adapter_rows.cells(a, n, self.figures.get(str(a.path))) for a, n in zip(self.adapters, names)]
        select = self._select if self._select in keys else (str(current.path) if current else None)
        if self._select in keys:
            self._select = None
        self._rows = rows
        with self.app.batch_update():
            self._fill(table, select)
            self.set_class(not self.adapters, "-empty")
            self._update_title()
            self._show_detail()
        self.refresh_bindings()

    def on_resize(self) -> None:
        # the name column takes what the others leave: measure again once the table has its new width
        if self._rows:
            self.call_after_refresh(self._refill)

    def _refill(self) -> None:
        current = self.selected
        self._fill(self.query_one(DataTable), str(current.path) if current else None)
        self._show_detail()  # the file names are cut to the pane's new width

    def _fill(self, table: DataTable, select: str | None) -> None:
        fill_table(table, self.COLUMNS, self._rows, [str(a.path) for a in self.adapters], select=select, flex="name",
                   optional=adapter_rows.OPTIONAL, clip={"name": adapter_rows.fit_name})

    @property
    def selected(self) -> AdapterInfo | None:
        table = self.query_one(DataTable)
        if not self.adapters or table.row_count == 0:
            return None
        row = table.cursor_row
        if not 0 <= row < table.row_count:
            return None
        key = table.coordinate_to_cell_key((row, 0)).row_key.value
        return next((a for a in self.adapters if str(a.path) == key), None)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()
        self.refresh_bindings()

    def _show_detail(self) -> None:
        a = self.selected
        info = self.query_one("#ad-info-text", Static)
        files = self.query_one("#ad-files-list", Static)
        if a is None:
            info.update("")
            files.update("")
            return
        exported = self.exports.get(str(a.path)) or []
        info.update(adapter_rows.info_grid(a, self.figures.get(str(a.path)), exported))
        files.update(adapter_rows.files_grid(a, exported, files.size.width))

    # -- actions -------------------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("merge", "delete", "copy_path", "try_it", "export", "try_gguf"):
            return self.is_mounted and self.selected is not None
        return True

    def action_try_it(self) -> None:
        """Open the playground with this adapter: its answers beside the base model's."""
        a = self.selected
        if a is not None:
            self.app.open_playground(a.path)

    def action_try_gguf(self) -> None:
        """Open the playground with this adapter beside one of its GGUF exports: what the export cost."""
        a = self.selected
        if a is None:
            return
        exported = self.exports.get(str(a.path)) or []
        if not exported:
            self.notify("No GGUF export of this adapter yet: e exports one.", severity="warning")
            return
        if len(exported) == 1:
            self.app.open_playground(a.path, gguf=exported[0][1].path)
            return
        choices = [(str(e.path), f"{folder}/{e.path.name}  ·  {format_bytes(e.size)}") for folder, e in exported]
        self.app.push_screen(ChoiceModal("Beside which GGUF file?", choices,
                                         body="The adapter's answers beside this file's, in llama.cpp."),
                             lambda v: self.app.open_playground(a.path, gguf=v) if v else None)

    def action_merge(self) -> None:
        a = self.selected
        if a is None:
            return
        self.app.open_merge(a.path)

    def action_export(self) -> None:
        """GGUF for llama.cpp and Ollama: the adapter merged in memory, converted, checked by llama.cpp."""
        from loratui.ui.screens.merge_export import ExportScreen

        a = self.selected
        if a is not None:
            self.app.push_screen(ExportScreen(a.path))

    def action_copy_path(self) -> None:
        a = self.selected
        if a is None:
            return
        self.app.copy_to_clipboard(str(a.path))
        self.notify(str(a.path), title="Path copied")

    def action_delete(self) -> None:
        a = self.selected
        if a is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete(a.path)

        what = "checkpoint" if a.kind == "checkpoint" else "adapter"
        self.app.push_screen(ConfirmModal(
            f"Delete the {what} {a.name}?",
            f"Removes {a.path} ({len(a.files)} files, {format_bytes(a.size)}). Nothing else is touched.",
            yes="Delete"), confirmed)

    @work(thread=True, exclusive=True, exit_on_error=False, group="delete", description="Deleting the adapter")
    def _delete(self, path: Path) -> None:
        """Remove ``path`` (a failure is shown in the error modal by ``LoratuiScreen``)."""
        delete_adapter(path)
        self.app.call_from_thread(self._deleted, path)

    def _deleted(self, path: Path) -> None:
        self.notify(f"Deleted {path}")
        self.action_refresh()

    def action_add_folder(self) -> None:
        def added(value: str | None) -> None:
            if not value:
                return
            path = Path(value).expanduser()
            if not path.is_dir():
                self.notify(f"{path} is not a folder", severity="error")
                return
            path = path.resolve()
            if path not in self.folders:
                self.extra_folders.append(path)
                if path not in self.app.adapter_folders:
                    self.app.adapter_folders.append(path)
            self._update_title()
            self.action_refresh()

        self.app.push_screen(PromptModal("Add a folder to search for adapters", placeholder="~/adapters",
                                         body="Searched recursively (4 levels) for folders with adapter_config.json."),
                             added)
