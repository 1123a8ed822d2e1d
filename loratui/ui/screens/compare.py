"""Runs side by side: what each trained, what it scored and what it cost, with bar charts and the eval-loss curves.

Opened with runs marked in the Runs screen (``v``), with a study's runs (from the Queue screen or ``s`` here), or
on its own (the newest study, else the newest runs). Refreshes while any of its runs is still going, so a study
fills in as the queue works through it. ``e`` exports CSV and Markdown (with the charts as text).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Static
from textual.worker import get_current_worker

from loratui.core.compare import (NOT_DONE, RowCache, RunRow, column_title, default_selection, export,
                                  short_titles, table_rows)
from loratui.core.study import list_study_batches, study_runs
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.widgets.choice_modal import ChoiceModal
from loratui.ui.widgets.compare_chart import CHARTS, CompareChart
from loratui.ui.widgets.tables import RowTable, fill_table, middle_ellipsis, name_ellipsis, wrap_words

#: seconds between refreshes while a compared run is still going
REFRESH_INTERVAL = 3.0
#: the least the row labels and each run's values get (the labels more where the values leave room)
LABEL_WIDTH, VALUE_WIDTH = 18, 16


@dataclass
class CompareLoaded(Message):
    rows: list[RunRow]
    title: str
    study: str | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, CompareLoaded)


class CompareScreen(LoratuiScreen):
    DEFAULT_CSS = """
    CompareScreen #cmp-title { height: 1; padding: 0 1; background: $boost; }
    CompareScreen #cmp-table { height: 1fr; min-height: 6; }
    CompareScreen #cmp-chart-title { height: 2; padding: 0 1; border-top: solid $primary 40%; }
    CompareScreen CompareChart { height: 45%; min-height: 8; }
    CompareScreen #cmp-empty { height: 1fr; content-align: center middle; color: $text-muted; display: none; }
    CompareScreen.-empty #cmp-empty { display: block; }
    CompareScreen.-empty #cmp-table, CompareScreen.-empty CompareChart,
    CompareScreen.-empty #cmp-chart-title { display: none; }
    """

    POLLERS = {"compare": "action_refresh"}

    BINDINGS = [
        Binding("n", "next_chart", "Next chart"),  # not t: t is the app's Playground everywhere
        Binding("N,shift+n", "next_chart(-1)", "Previous chart", show=False),  # N: what a terminal sends
        Binding("e", "export", "Export"),
        Binding("p", "pick_study", "Study"),
        Binding("o", "open", "Open run"),
        Binding("f5,ctrl+r", "refresh", "Refresh"),
    ]

    def __init__(self, runs: list[Path] | None = None, study: str | None = None, *, name: str | None = None,
                 id: str | None = None):
        super().__init__(name=name, id=id)
        self.run_paths: list[Path] | None = [Path(p) for p in runs] if runs else None
        self.study = study
        self.batch: str | None = None  # the study's batch on screen (None: its newest)
        self.rows: list[RunRow] = []
        self.heading = ""
        self.loaded = False
        self.last_export: tuple[Path, Path] | None = None
        #: the study shown (chosen, or the newest one when nothing was chosen)
        self.shown_study: str | None = None
        self._cache = RowCache()
        #: the head every compared run's name shares (the columns show the rest)
        self.common_head = ""
        #: (column titles, (label, values) rows) of the table, filled again at each resize
        self._table: tuple[list[str], list] = ([], [])

    @property
    def runs_dir(self) -> Path:
        return Path(self.app.runs_dir)

    def compose(self) -> ComposeResult:
        yield Static(id="cmp-title")
        yield RowTable(id="cmp-table")
        yield Static("Nothing to compare yet: mark runs in Runs (space, then v), or queue a study (w).", id="cmp-empty")
        yield Static(id="cmp-chart-title")
        yield CompareChart()
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.action_refresh()
        self.set_interval(REFRESH_INTERVAL, self._refresh_if_live)

    def on_screen_resume(self) -> None:
        self.action_refresh()

    # -- what other screens call ------------------------------------------------------------------------------
    def set_runs(self, runs: list[Path]) -> None:
        self.run_paths, self.study, self.batch = [Path(p) for p in runs], None, None
        self.action_refresh()

    def set_study(self, study: str, batch: str | None = None) -> None:
        """The runs of ``study``: its newest batch, or ``batch``."""
        self.run_paths, self.study, self.batch = None, study, batch
        self.action_refresh()

    # -- loading ----------------------------------------------------------------------------------------------
    def action_refresh(self) -> None:
        self._load(self.run_paths, self.study, self.runs_dir, self.batch)

    def _refresh_if_live(self) -> None:
        if any(r.state in NOT_DONE for r in self.rows):
            self.action_refresh()

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare", description="Reading runs")
    def _load(self, paths: list[Path] | None, study: str | None, runs_dir: Path, batch: str | None = None) -> None:
        title = ""
        if study is not None:
            paths = study_runs(runs_dir, study, batch)
            title = f"study {study}" + (f" · {batch}" if batch else "")
        elif paths is None:
            paths, title, study = default_selection(runs_dir)
        rows = self._cache.read(paths)
        if not get_current_worker().is_cancelled:
            title = title or f"{len(rows)} selected run{'s' if len(rows) != 1 else ''}"
            self.post_message(CompareLoaded(rows, title, study))

    @on(CompareLoaded)
    def _loaded(self, message: CompareLoaded) -> None:
        self.rows, self.heading, self.loaded = message.rows, message.title, True
        self.shown_study = message.study
        titles, self.common_head = short_titles(self.rows)
        body = table_rows(self.rows) if self.rows else []
        if titles != [r.name for r in self.rows]:
            body.insert(0, ("run", [r.name for r in self.rows]))
        self._table = (titles, body)
        with self.app.batch_update():
            self._fill()
            self.query_one(CompareChart).set_rows(self.rows)
            self.set_class(not self.rows, "-empty")
            self._update_titles()
        self.refresh_bindings()

    def _fill(self) -> None:
        """The labels (config keys like train.logging_steps) get what the values leave at their usual 16 cells at
        most, the values the rest; a value still too wide wraps at its spaces."""
        titles, body = self._table
        table = self.query_one(DataTable)
        room = (table.size.width or self.app.size.width) - table.styles.scrollbar_size_vertical
        labels = max((len(label) for label, _ in body), default=0)
        values = [max([len(t)] + [len(str(v[i])) for _, v in body]) for i, t in enumerate(titles)]
        label_w = min(labels, max(LABEL_WIDTH, room - 2 - sum(min(w, VALUE_WIDTH) + 2 for w in values)))
        value_w = max(VALUE_WIDTH, (room - label_w - 2) // max(1, len(titles)) - 2)
        columns = [("field", "", label_w)] + [(f"r{i}", middle_ellipsis(Text(t), value_w).plain, value_w)
                                              for i, t in enumerate(titles)]  # a long name no wider than its values
        cells = [(Text(label, style="bold"), *values) for label, values in body]
        clip = {"field": name_ellipsis} | {f"r{i}": wrap_words for i in range(len(titles))}
        fill_table(table, columns, cells, [label for label, _ in body], clip=clip)

    def on_resize(self) -> None:
        if self._table[1]:
            self.call_after_refresh(self._fill)
            self.call_after_refresh(self._update_titles)  # the legend fits the new width

    def _update_titles(self) -> None:
        n = len(self.rows)
        live = sum(1 for r in self.rows if r.state in NOT_DONE)
        text = Text.assemble(("Compare", "bold"), f"  {self.heading}", (f"  ·  {n} run{'s' * (n != 1)}", "dim"))
        if self.common_head:  # the columns show what tells the runs apart; what they share is said once
            text.append(f"  ·  {self.common_head}…", style="dim")
        if live:
            text.append(f" · {live} not done yet", style="green")
        self.query_one("#cmp-title", Static).update(text)
        chart = self.query_one(CompareChart)
        i = CHARTS.index(chart.chart)
        box = self.query_one("#cmp-chart-title", Static)
        hint = Text.assemble((f"   chart {i + 1}/{len(CHARTS)} · n next", "dim"))
        title = Text.assemble((chart.title, "bold"))
        if chart.chart == "curves":  # the legend, off the data (plotext's own covered the first evaluations)
            room = (box.content_region.width or self.app.size.width - 2) - title.cell_len - 3
            legend, left_out = chart.legend(room - hint.cell_len)
            if left_out:  # the hint gives way to the runs
                (legend, _), hint = chart.legend(room), Text()
            title.append_text(Text("   ") + legend)
        box.update(title.append_text(hint))

    # -- actions ----------------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("export", "next_chart", "open"):
            return bool(self.rows) if self.is_mounted else False
        return True

    def action_next_chart(self, step: int = 1) -> None:
        chart = self.query_one(CompareChart)
        chart.show_chart(CHARTS[(CHARTS.index(chart.chart) + step) % len(CHARTS)])
        self._update_titles()

    def action_export(self) -> None:
        if not self.rows:
            return
        stem = self.shown_study or None
        folder = self.runs_dir / "compare"
        title = self.heading[:1].upper() + self.heading[1:] if self.heading else "Comparison"
        try:
            self.last_export = export(self.rows, folder, title=title, stem=stem)
        except OSError as err:
            self.notify(str(err), title="Export failed", severity="error")
            return
        csv_path, md_path = self.last_export
        self.notify(f"{csv_path}\n{md_path}", title="Exported")

    def action_pick_study(self) -> None:
        studies = list_study_batches(self.runs_dir)
        if not studies:
            self.notify("No studies in this runs folder yet: queue one from the Queue screen or with "
                        "loratui study FILE.", severity="warning")
            return

        def picked(key: str | None) -> None:
            if key:
                name, _, batch = key.partition("\t")
                self.set_study(name, batch or None)

        self.app.push_screen(ChoiceModal("Compare the runs of a study",
                                         [(f"{name}\t{batch}", f"{name}  ·  {count} run{'s' if count != 1 else ''}"
                                           f"  ·  {batch}") for name, batch, count in studies]), picked)

    def action_open(self) -> None:
        """Open one of the compared runs in the monitor (runs are columns here, so pick from a list)."""
        if not self.rows:
            return

        def picked(path: str | None) -> None:
            if path:
                self.app.open_monitor(Path(path))

        self.app.push_screen(ChoiceModal("Open a run in the monitor",
                                         [(str(r.path), f"{column_title(r)}  ·  {r.name}  ·  {r.state}")
                                          for r in self.rows]), picked)
