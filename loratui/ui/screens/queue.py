"""The run queue: runs waiting their turn, the one running, and those done; reorder, cancel, add, compare.

The queue lives in the runs folder (``runs/.queue/``) and a detached runner process works through it, so closing
the app or losing the SSH session changes nothing: reopen the app and the queue is where it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from loratui.core.config import load_config
from loratui.core.fmt import format_duration
from loratui.core.preference import scores_text
from loratui.core.protocol import STATE_STYLES
from loratui.core.queue import Entry, RunQueue, held_text
from loratui.core.queue_runner import default_gpus
from loratui.core.runs import RunDir, summarize
from loratui.core.study import is_study_file, load_study
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.modals import ConfirmModal, PromptModal
from loratui.ui.widgets.tables import RowTable, fill_table

REFRESH_INTERVAL = 1.5
#: the run states' own colours (core.protocol), and the queue's one word of its own
STATE_STYLES = {**STATE_STYLES, "cancelled": "dim strike"}
HELD_TAIL = ("; starts when it ends", "; starts when they end")


@dataclass
class QueueLoaded(Message):
    entries: list[Entry]
    progress: dict[str, str]
    runner: int | None
    spent: dict[str, float | None]
    """entry id -> its run's active time (the fold's)"""
    scores: dict[str, str] = field(default_factory=dict)
    """entry id -> its run's scores in one line (loss, eval loss; a preference run's margin and accuracy)"""
    states: dict[str, str] = field(default_factory=dict)
    """entry id -> a running entry's run state, the word Runs and `loratui runs` say (stopping, stalled...)"""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, QueueLoaded)


@dataclass
class QueueChanged(Message):
    note: str


class QueueScreen(LoratuiScreen):
    DEFAULT_CSS = """
    QueueScreen #q-title { height: 1; padding: 0 1; background: $boost; }
    QueueScreen #q-held { height: 1; padding: 0 1; color: $warning; display: none; }
    QueueScreen.-held #q-held { display: block; }
    QueueScreen DataTable { height: 1fr; }
    QueueScreen #q-detail { height: auto; max-height: 3; padding: 0 1; border-top: solid $primary 40%; }
    QueueScreen #q-empty { height: 1fr; content-align: center middle; color: $text-muted; display: none; }
    QueueScreen.-empty #q-empty { display: block; }
    QueueScreen.-empty DataTable { display: none; }
    """

    POLLERS = {"queue": "action_refresh"}

    BINDINGS = [
        Binding("n", "add", "Add", priority=True),  # priority: see LoratuiScreen
        Binding("x,delete", "cancel", "Cancel"),
        Binding("K,ctrl+up", "move(-1)", "Up"),
        Binding("J,ctrl+down", "move(1)", "Down"),
        Binding("c", "compare", "Compare"),
        Binding("enter", "open", "Open", show=False),
        Binding("p", "start_runner", "Start runner"),
        Binding("D", "clear_done", "Clear done", show=False),
        Binding("f5,ctrl+r", "refresh", "Refresh"),
    ]

    COLUMNS = [("id", "#", 5), ("state", "State", 9), ("run", "Run", 30), ("study", "Study", 16),
               ("progress", "Progress", 13), ("time", "Time", 8)]

    def __init__(self, *, name: str | None = None, id: str | None = None):
        super().__init__(name=name, id=id)
        self.entries: list[Entry] = []
        self.progress: dict[str, str] = {}
        self.spent: dict[str, float | None] = {}
        self.scores: dict[str, str] = {}
        self.states: dict[str, str] = {}
        self.runner: int | None = None
        self.loaded = False

    @property
    def runs_dir(self) -> Path:
        return Path(self.app.runs_dir)

    @property
    def queue(self) -> RunQueue:
        return RunQueue(self.runs_dir)

    def compose(self) -> ComposeResult:
        yield Static(id="q-title")
        yield Static(id="q-held")
        yield RowTable(id="q-table")
        yield Static("The queue is empty. n adds a config or a study (sample_configs/study-*.yaml); "
                     "its runs start one after another, even after you close the app.", id="q-empty")
        yield Static(id="q-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.action_refresh()
        self.set_interval(REFRESH_INTERVAL, self.action_refresh)

    def on_screen_resume(self) -> None:
        self.action_refresh()

    # -- loading ----------------------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        self._load(self.runs_dir)

    @work(thread=True, exclusive=True, exit_on_error=False, group="queue", description="Reading the queue")
    def _load(self, runs_dir: Path) -> None:
        q = RunQueue(runs_dir)
        state = q.read()
        progress, spent, scores, states = {}, {}, {}, {}
        now = time.time()
        for e in state.entries:
            if not e.started:
                continue
            s = summarize(RunDir(runs_dir / e.run), now=now)
            spent[e.id] = s.elapsed  # the one fold's active time, as Runs, Monitor and Compare show it
            scores[e.id] = scores_text(s)
            # the fold's step, as `loratui runs` writes it ('1/30   3%'), whatever the entry's state
            progress[e.id] = f"{s.progress_text} {s.progress * 100:3.0f}%" if s.max_steps else s.progress_text
            if e.state == "running" and progress[e.id] == "-":
                progress[e.id] = "starting"
            if e.state == "running" and s.state.active:
                states[e.id] = str(s.state)
        if not get_current_worker().is_cancelled:
            self.post_message(QueueLoaded(state.entries, progress, q.runner_pid(), spent, scores, states))

    @on(QueueLoaded)
    def _loaded(self, message: QueueLoaded) -> None:
        self.entries, self.progress, self.runner = message.entries, message.progress, message.runner
        self.spent, self.scores, self.states = message.spent, message.scores, message.states
        self.loaded = True
        table = self.query_one(DataTable)
        current = self.selected
        rows = [self._cells(e, i + 1) for i, e in enumerate(self.entries)]
        with self.app.batch_update():
            fill_table(table, self.COLUMNS, rows, [e.id for e in self.entries],
                       select=current.id if current else None, flex="run")
            self.set_class(not self.entries, "-empty")
            self._update_title()
            self._show_held()
            self._show_detail()
        self.refresh_bindings()

    def _cells(self, e: Entry, position: int) -> tuple:
        """``position``: the entry's place in the queue's order (what '#' reads; the id stays in the detail)."""
        spent = format_duration(self.spent.get(e.id)) if e.started else "-"
        progress = self.progress.get(e.id, "-")
        state = self.shown_state(e)
        return (str(position), Text(state, style=STATE_STYLES.get(state, "")),
                Text(e.run, style="bold" if e.state == "running" else ""), e.study or "-", progress, spent)

    def shown_state(self, e: Entry) -> str:
        """The entry's word: a running one's run state (the word every view says: 'stopping' when stopped from
        anywhere), else the queue's (waiting, cancelled; 'stopping' once its cancel is asked)."""
        return "stopping" if e.shown_state == "stopping" else self.states.get(e.id, e.shown_state)

    def _update_title(self) -> None:
        waiting = sum(1 for e in self.entries if e.state == "waiting")
        running = sum(1 for e in self.entries if self.shown_state(e) in ("running", "starting", "stalled"))
        stopping = sum(1 for e in self.entries if self.shown_state(e) == "stopping")
        # '1 waiting, 1 stopping' leaves out '0 running' (at 80 columns the runner's pid went off the edge)
        counts = f"{waiting} waiting" + (f", {running} running" if running or not stopping else "")
        text = Text.assemble(("Queue", "bold"), f"  {self.runs_dir}", (f"  ·  {counts}", "dim"))
        if stopping:
            text.append(f", {stopping} stopping", style="yellow")
        if self.runner:
            text.append(f"  ·  runner pid {self.runner}", style="green")
        elif waiting:
            text.append("  ·  runner stopped: p starts it", style="yellow")
        self.query_one("#q-title", Static).update(text)

    def held(self, e: Entry | None = None) -> list[str]:
        """The outside runs the runner says hold back ``e`` (else the first waiting entry); none without a runner."""
        if e is None:
            e = next((x for x in self.entries if x.state == "waiting"), None)
        return list(e.held_by) if e is not None and e.state == "waiting" and self.runner else []

    def _show_held(self) -> None:
        """One line under the title while runs outside the queue keep its next run waiting."""
        names = self.held()
        width = max(20, (self.size.width or 80) - 2)
        line = held_text(names, width)
        tail = HELD_TAIL[len(names) > 1]
        if line and len(line) + len(tail) <= width:
            line += tail
        self.query_one("#q-held", Static).update(line)
        self.set_class(bool(names), "-held")

    @property
    def selected(self) -> Entry | None:
        table = self.query_one(DataTable)
        if not self.entries or table.row_count == 0:
            return None
        row = table.cursor_row
        if not 0 <= row < table.row_count:
            return None
        key = table.coordinate_to_cell_key((row, 0)).row_key.value
        return next((e for e in self.entries if e.id == key), None)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._show_detail()
        self.refresh_bindings()

    def _show_detail(self) -> None:
        e = self.selected
        detail = self.query_one("#q-detail", Static)
        if e is None:
            detail.update("")
            return
        text = Text.assemble((str(self.runs_dir / e.run), "dim"), (f"  ·  id {e.id}", "dim"))
        if self.scores.get(e.id):  # first, on its own line: the figures are what a glance looks for
            text = Text.assemble((self.scores[e.id], "bold"), "\n", text)
        if e.label:
            text.append(f"  ·  {e.label}")
        if e.added:
            text.append(f"  ·  added {datetime.fromtimestamp(e.added).strftime('%m-%d %H:%M')}", style="dim")
        if e.gpu is not None:
            text.append(f"  ·  GPU {e.gpu}")
        detail.update(text)

    # -- actions ----------------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not self.is_mounted:
            return True
        e = self.selected
        if action == "move":
            return e is not None and e.state == "waiting"
        if action == "cancel":
            return e is not None and e.state in ("waiting", "running")
        if action in ("open", "compare"):
            return e is not None
        if action == "start_runner":
            return self.runner is None and any(x.state == "waiting" for x in self.entries)
        return True

    def action_move(self, delta: int) -> None:
        """Move the highlighted waiting run up (-1) or down (+1); the highlight goes with it (the cursor stays on
        its row until the queue is read again, and the new order is shown with the cursor on the same run)."""
        e = self.selected
        if e is not None:
            self.queue.move(e.id, delta)
        self.action_refresh()

    def action_cancel(self) -> None:
        e = self.selected
        if e is None:
            return
        body = ("Its run folder is removed (it never started)." if e.state == "waiting" else
                "The engine finishes the current step, saves the adapter and a checkpoint, then exits; "
                "the next run in the queue starts.")

        def confirmed(yes: bool | None) -> None:
            if yes:
                result = self.queue.cancel(e.id)
                self.notify(f"{e.run}: {result}")
                self.action_refresh()

        self.app.push_screen(ConfirmModal(f"Cancel {e.run}?", body, yes="Cancel run", no="Keep"), confirmed)

    def action_add(self) -> None:
        def given(value: str | None) -> None:
            if value:
                self._add(setup_core.find_config(value))

        self.app.push_screen(PromptModal(
            "Queue a config or a study", placeholder="sample_configs/study-lora-vs-full.yaml",
            body="A run config (one run) or a study file (a config and a grid of variations: many runs)."), given)

    @work(thread=True, exclusive=False, exit_on_error=False, group="queue-add", description="Queuing")
    def _add(self, path: Path) -> None:
        q = RunQueue(self.runs_dir)
        if is_study_file(path):
            study = load_study(path)
            entries = q.add_study(study)
            note = f"queued study {study.name}: {len(entries)} runs"
        else:
            cfg = load_config(path)
            entry = q.add(cfg)
            note = f"queued {entry.run}"
        q.ensure_runner(default_gpus())
        self.post_message(QueueChanged(note))

    @on(QueueChanged)
    def _changed(self, message: QueueChanged) -> None:
        self.notify(message.note)
        self.action_refresh()

    def action_start_runner(self) -> None:
        pid = self.queue.ensure_runner(default_gpus())
        self.notify(f"queue runner pid {pid}" if pid else "nothing waits")
        self.action_refresh()

    def action_clear_done(self) -> None:
        n = self.queue.clear_done()
        self.notify(f"forgot {n} finished entries (their run folders stay)")
        self.action_refresh()

    def action_open(self) -> None:
        e = self.selected
        if e is not None and e.state not in ("waiting", "cancelled"):
            self.app.open_monitor(self.runs_dir / e.run)

    def action_compare(self) -> None:
        e = self.selected
        if e is None:
            return
        if e.study:
            self.app.open_compare(study=e.study)
        else:
            self.app.open_compare(runs=[self.runs_dir / x.run for x in self.entries if x.state != "cancelled"])
