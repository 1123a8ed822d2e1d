"""Every run under the runs folder, refreshed every few seconds: open, copy its config, resume, stop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, get_current_worker

from loratui.core.compare import summary_path
from loratui.core.errors import LoratuiError
from loratui.core.fold import RunSummary
from loratui.core.fmt import format_bytes
from loratui.core.protocol import RunState
from loratui.core.run_delete import delete_run, folder_size
from loratui.core.runs import RunDir, RunReader, launch_detached, stop_run
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.widgets.modals import ConfirmModal
from loratui.ui.widgets.run_rows import COLUMNS, OPTIONAL, detail_text, row_cells, why_not_resume, why_not_stop
from loratui.ui.widgets.tables import RowTable, fill_table, name_ellipsis

#: seconds between refreshes of the list
REFRESH_INTERVAL = 2.0
#: the clock elapsed time and ETA are computed at (tests fix it)
CLOCK = time.time

RESUMABLE = (RunState.STOPPED, RunState.CRASHED)


@dataclass
class RunsLoaded(Message):
    runs_dir: Path
    summaries: list[RunSummary]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunsLoaded)


@dataclass
class RunResumed(Message):
    run_dir: Path
    pid: int


class SummaryCache:
    """One :class:`RunReader` per run: each refresh reads only the new event lines, and the state (is the engine
    process alive?), elapsed time and ETA are computed afresh by the one fold. A broken run comes back
    ``unreadable`` with its reason; it never hides the others."""

    def __init__(self) -> None:
        self._readers: dict[Path, RunReader] = {}
        self._lock = threading.Lock()

    def summaries(self, runs_dir: Path) -> list[RunSummary]:
        # refreshes run in thread workers; one that outlives the next must not fold the same lines twice
        with self._lock:
            return self._summaries(runs_dir)

    def _summaries(self, runs_dir: Path) -> list[RunSummary]:
        out: list[RunSummary] = []
        try:
            folders = [p for p in Path(runs_dir).iterdir() if p.is_dir()]
        except OSError:
            folders = []
        seen = set()
        now = CLOCK()
        for folder in folders:
            run = RunDir(folder)
            if not run.exists():
                continue
            seen.add(folder)
            reader = self._readers.get(folder)
            if reader is None:
                reader = self._readers[folder] = RunReader(run)
            try:
                reader.poll()
                summary = reader.summary(now)
            except Exception as err:  # noqa: BLE001 - one broken run never breaks the list
                self._readers.pop(folder, None)
                summary = RunSummary(name=run.name, path=run.path, state=RunState.UNREADABLE,
                                     problem=f"{type(err).__name__}: {err}".splitlines()[0][:200])
            out.append(summary)
        for gone in set(self._readers) - seen:
            del self._readers[gone]
        out.sort(key=lambda s: (s.started or 0, s.name), reverse=True)
        return out


class RunsScreen(LoratuiScreen):
    """The runs table. ``runs_dir`` defaults to ``app.runs_dir``."""

    DEFAULT_CSS = """
    RunsScreen #runs-title { height: 1; padding: 0 1; background: $boost; }
    RunsScreen DataTable { height: 1fr; }
    RunsScreen #runs-detail { height: auto; max-height: 4; padding: 0 1; border-top: solid $primary 40%; }
    RunsScreen #runs-empty { height: 1fr; content-align: center middle; color: $text-muted; display: none; }
    RunsScreen.-empty #runs-empty { display: block; }
    RunsScreen.-empty DataTable { display: none; }
    """

    #: a failed listing pauses the periodic refresh and tries again with a back-off
    POLLERS = {"runs": "action_refresh"}

    BINDINGS = [
        Binding("enter", "open", "Open", show=True),
        Binding("c", "copy_config", "Copy", tooltip="Copy its config into Setup, for a new run"),
        Binding("u", "resume", "Resume"),
        Binding("x", "stop", "Stop run"),
        Binding("delete", "delete", "Delete"),
        Binding("f5,ctrl+r", "refresh", "Refresh"),
        Binding("space", "mark", "Mark"),
        Binding("v", "compare", "Compare"),
        # tried when the binding above is off for the run under the cursor: one line says why, and what instead
        Binding("u", "why_not('resume')", show=False),
        Binding("x", "why_not('stop')", show=False),
    ]

    COLUMNS = COLUMNS

    def __init__(self, runs_dir: Path | None = None, *, name: str | None = None, id: str | None = None):
        super().__init__(name=name, id=id)
        self._runs_dir = Path(runs_dir) if runs_dir else None
        self.summaries: list[RunSummary] = []
        self._cache = SummaryCache()
        self._rows: list[tuple] = []
        self.loaded = False
        #: run folders marked (space) for Compare (v)
        self.marked: set[Path] = set()

    @property
    def runs_dir(self) -> Path:
        if self._runs_dir is not None:
            return self._runs_dir
        return Path(self.app.runs_dir)

    def compose(self) -> ComposeResult:
        yield Static(id="runs-title")
        table: DataTable = RowTable(id="runs-table")
        for key, label, _ in self.COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static("No runs yet: set one up and launch it from Setup.", id="runs-empty")
        yield Static(id="runs-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self._update_title()
        self.action_refresh()
        self._interval = self.set_interval(REFRESH_INTERVAL, self.action_refresh)

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        if worker.group == "runs":
            self._interval.pause()  # the back-off decides when to try again
        super().worker_failed(worker, error)

    def on_screen_resume(self) -> None:
        self.action_refresh()

    def _update_title(self) -> None:
        n = len(self.summaries)
        running = sum(1 for s in self.summaries if s.state == "running")
        text = Text.assemble(("Runs", "bold"), f"  {self.runs_dir}", (f"  ·  {n} run{'s' * (n != 1)}", "dim"))
        if running:
            text.append(f" · {running} running", style="green")
        if n:
            text.append("  ·  enter opens the monitor", style="dim")
        self.query_one("#runs-title", Static).update(text)

    # -- loading -------------------------------------------------------------------------------------------------

    def action_refresh(self) -> None:
        self._load(self.runs_dir)

    @work(thread=True, exclusive=True, exit_on_error=False, group="runs", description="Listing runs")
    def _load(self, runs_dir: Path) -> None:
        summaries = self._cache.summaries(runs_dir)
        if not get_current_worker().is_cancelled:
            self.post_message(RunsLoaded(runs_dir, summaries))

    @on(RunsLoaded)
    def _loaded(self, message: RunsLoaded) -> None:
        self._interval.resume()
        self.summaries = message.summaries
        self.loaded = True
        selected = self.selected
        rows = [self._marked_cells(s) for s in self.summaries]
        with self.app.batch_update():
            if rows != self._rows:
                self._rows = rows
                self._fill(select=str(summary_path(selected)) if selected is not None else None)
            self.set_class(not self.summaries, "-empty")
            self._update_title()
            self._show_detail()
        self.refresh_bindings()

    def _fill(self, select: str | None = None) -> None:
        fill_table(self.query_one(DataTable), list(self.COLUMNS), self._rows,
                   [str(summary_path(s)) for s in self.summaries], select=select, flex="name",
                   optional=OPTIONAL, clip={"name": name_ellipsis})

    def on_resize(self) -> None:
        # the name column takes what the others leave: measure again once the table has its new width
        if self._rows:
            self.call_after_refresh(self._refit)

    def _refit(self) -> None:
        self._fill()
        self._show_detail()  # the model moves to the detail while its column gives way

    @property
    def selected(self) -> RunSummary | None:
        table = self.query_one(DataTable)
        if not self.summaries or table.row_count == 0:
            return None
        row = table.cursor_row
        if row is None or not 0 <= row < table.row_count:
            return None
        key = table.coordinate_to_cell_key((row, 0)).row_key.value
        return next((s for s in self.summaries if str(summary_path(s)) == key), None)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()
        self.refresh_bindings()

    def _show_detail(self) -> None:
        s = self.selected
        detail = self.query_one("#runs-detail", Static)
        if s is None:
            detail.update("")
            return
        shown = {str(c.key.value) for c in self.query_one(DataTable).ordered_columns}
        detail.update(detail_text(s, model="model" not in shown))

    # -- actions -------------------------------------------------------------------------------------------------

    def _marked_cells(self, s) -> tuple:

        cells = row_cells(s)
        if summary_path(s) in self.marked:
            cells = (Text.assemble(("● ", "bold cyan"), cells[0]), *cells[1:])
        return cells

    def action_mark(self) -> None:
        """Mark or unmark the run under the cursor for Compare."""

        s = self.selected
        if s is None:
            return
        path = summary_path(s)
        self.marked.symmetric_difference_update({path})
        self._rows = []  # redraw with the mark
        self.action_refresh()
        table = self.query_one(DataTable)
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1, animate=False)

    def action_compare(self) -> None:
        """Compare the marked runs side by side (or the run under the cursor with its study)."""
        from loratui.core.study import read_study_tag

        if self.marked:
            paths = [summary_path(s) for s in reversed(self.summaries) if summary_path(s) in self.marked]
            self.app.open_compare(runs=paths)
            return
        s = self.selected
        if s is None:
            return
        study = read_study_tag(summary_path(s)).get("study")
        if study:
            self.app.open_compare(study=study)
        else:
            self.app.open_compare(runs=[summary_path(s)])

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        s = self.selected if self.is_mounted else None
        if action == "resume":
            return s is not None and s.state in RESUMABLE
        if action == "stop":
            return s is not None and s.state.active
        if action in ("open", "copy_config", "why_not"):
            return s is not None
        if action == "delete":
            return s is not None and not s.state.active
        return True

    def action_why_not(self, action: str) -> None:
        """``u`` or ``x`` on a run they don't apply to: say why, and what to do instead."""
        s = self.selected
        if s is not None:
            self.notify(why_not_resume(s) if action == "resume" else why_not_stop(s), severity="warning")

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        s = self.selected
        if s is None:
            return
        self.app.open_monitor(summary_path(s))

    def action_copy_config(self) -> None:
        s = self.selected
        if s is None:
            return
        try:
            cfg = RunDir(summary_path(s)).config()
        except Exception as err:  # ConfigError: one line with the field
            self.notify(str(err), title="Can't read this run's config", severity="error")
            return
        cfg.output.name = None  # a copy must not collide with the original run folder
        self.app.open_setup_with(cfg)

    def action_resume(self) -> None:
        s = self.selected
        if s is None or s.state not in RESUMABLE:
            return
        run = RunDir(summary_path(s))
        checkpoint = run.latest_checkpoint()
        where = (f"from {Path(checkpoint).name}" if checkpoint is not None
                 else "from step 0 (it has no checkpoint yet)")

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._resume(run.path)

        self.app.push_screen(ConfirmModal(
            f"Resume {run.name}?", f"Starts its engine again {where}, in the background; the monitor opens.",
            yes="Resume", danger=False), confirmed)

    @work(thread=True, exclusive=True, exit_on_error=False, group="launch", description="Resuming run")
    def _resume(self, run_dir: Path) -> None:
        try:
            pid = launch_detached(RunDir(run_dir), resume=True)
        except LoratuiError as err:  # already running elsewhere (another app, the CLI), or a folder we can't write
            self.app.call_from_thread(self.notify, str(err), title="Not resumed", severity="error")
            return
        self.post_message(RunResumed(run_dir, pid))

    @on(RunResumed)
    def _resumed(self, message: RunResumed) -> None:
        self.notify(f"Resumed {message.run_dir.name} (pid {message.pid}).")
        self.action_refresh()
        self.app.open_monitor(message.run_dir)

    def action_stop(self) -> None:
        s = self.selected
        if s is None or not s.state.active:
            return
        run = RunDir(summary_path(s))

        def confirmed(yes: bool | None) -> None:
            if yes:
                if stop_run(run):
                    self.notify(f"Stopping {run.name}: the adapter is saved at the end of this step.")
                else:
                    self.notify(f"{run.name} is not running any more.", severity="warning")
                self.action_refresh()

        self.app.push_screen(ConfirmModal(
            f"Stop {run.name}?", "The engine finishes the current step, saves the adapter and a checkpoint, "
            "then exits. You can resume it later.", yes="Stop run"), confirmed)

    def action_delete(self) -> None:
        """Delete the run under the cursor: its whole folder, after a confirmation that says what goes."""
        s = self.selected
        if s is None or s.state.active:
            return
        run = RunDir(summary_path(s))
        files, size = folder_size(run.path)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete(run.path)

        self.app.push_screen(ConfirmModal(
            f"Delete the run {run.name}?",
            f"Removes its folder {run.path} ({files} files, {format_bytes(size)}): its config, events and logs, "
            "its adapter and checkpoints, and any merged model or GGUF export kept inside it. This cannot be "
            "undone.", yes="Delete"), confirmed)

    @work(thread=True, exclusive=True, exit_on_error=False, group="delete", description="Deleting the run")
    def _delete(self, path: Path) -> None:
        """Remove the run folder (a refusal or failure is shown in the error modal by ``LoratuiScreen``)."""
        delete_run(path)
        self.app.call_from_thread(self._deleted, path)

    def _deleted(self, path: Path) -> None:
        self.marked.discard(path)
        self.notify(f"Deleted {path.name}")
        self.action_refresh()
