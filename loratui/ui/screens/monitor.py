"""The run monitor: loss curves, progress, throughput, GPU panel and the engine's log, live from events.jsonl.

A thread worker tails the run's events file from the start (so attaching from a new app process replays the whole
history), folds events into a :class:`~loratui.ui.widgets.run_state.RunModel` (the run protocol's one fold, the
same numbers Runs and ``loratui runs`` show) and posts snapshots; a second thread samples the GPUs at 1 Hz. Neither
touches a widget: the screen renders what the messages carry. The watcher follows the run folder after the run
ends (slowly), so a resume from anywhere (``loratui train --resume``, another app) shows up without reopening.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, ProgressBar, Static
from textual.worker import Worker, get_current_worker

from loratui.core.fmt import format_lr
from loratui.core.gpu import GpuSampler
from loratui.core.protocol import EventTail
from loratui.core.runs import RunDir, summarize
from loratui.ui.messages import LogUpdated, RunResumedElsewhere, RunUpdated, WatchEnded
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.screens.monitor_actions import MonitorActions
from loratui.ui.widgets.gpu_panel import GpuPanel, GpuSampled
from loratui.ui.widgets.log_tail import LogTail
from loratui.ui.widgets.loss_chart import LossChart
from loratui.ui.widgets.lr_schedule import LrSchedule
from loratui.ui.widgets.monitor_text import banner_text, side_title, stats_text, steps_text, title_text
from loratui.ui.widgets.run_state import RunModel, RunView

#: seconds between polls of events.jsonl / status.json (tests may lower it)
POLL_INTERVAL = 0.25
#: seconds between polls once the run has ended (it may be resumed from elsewhere)
IDLE_POLL_INTERVAL = 1.0
#: the clock (elapsed, ETA) ticks at least this often while the run is active
TICK_INTERVAL = 1.0
#: seconds between GPU samples
GPU_INTERVAL = 1.0
LOG_LINES = 40

def make_sampler(pid: int | None) -> GpuSampler:
    """The GPU sampler the monitor uses (tests replace it with a fixed one)."""
    return GpuSampler(pid)


class MonitorScreen(MonitorActions, LoratuiScreen):
    """Watch one run. ``attach(run_dir)`` switches to another run (history replayed from the start)."""

    DEFAULT_CSS = """
    MonitorScreen { layout: vertical; overflow: hidden; }
    MonitorScreen #mon-body { height: 1fr; }
    MonitorScreen #mon-title { height: 1; padding: 0 1; background: $boost; }
    MonitorScreen #mon-progress-row { height: 1; padding: 0 1; }
    MonitorScreen #mon-progress { width: auto; }
    MonitorScreen #mon-progress Bar { width: 30; }
    MonitorScreen #mon-steps { width: 1fr; padding-left: 1; }
    MonitorScreen #mon-stats { height: 1; padding: 0 1; }
    MonitorScreen #mon-banner { height: auto; padding: 0 1; display: none; }
    MonitorScreen #mon-banner.-shown { display: block; }
    MonitorScreen #mon-banner.-error { border: heavy $error; color: $text; background: $error 15%; }
    MonitorScreen #mon-banner.-ok { border-left: thick $success; background: $success 10%; }
    MonitorScreen #mon-banner.-warn { border-left: thick $warning; background: $warning 10%; }
    MonitorScreen #mon-main { height: 1fr; min-height: 6; width: 100%; }  /* a tall banner leaves the log its rows */
    MonitorScreen #mon-chart { border: round $primary 60%; border-title-color: $text; width: 1fr; }
    MonitorScreen #mon-side { width: 34; border: round $primary 60%; padding: 0 1; }
    MonitorScreen #mon-lr-label { height: 1; margin-top: 1; }
    MonitorScreen #mon-lr { height: 1; }
    MonitorScreen #mon-log { height: 5; padding: 0 1; border-top: solid $primary 40%; color: $text-muted; }
    MonitorScreen #mon-empty { height: 1fr; content-align: center middle; color: $text-muted; }
    MonitorScreen.-empty #mon-body { display: none; }
    MonitorScreen #mon-empty { display: none; }
    MonitorScreen.-empty #mon-empty { display: block; }
    """

    #: the watcher and the GPU sampler start again (with a back-off) when they fail
    POLLERS = {"run": "_rewatch", "gpu": "_sample_gpus"}

    BINDINGS = [
        Binding("x", "stop", "Stop run"),
        Binding("c", "checkpoint", "Checkpoint"),
        Binding("x", "why_not('stop')", show=False),  # tried when the one above is off: says why
        Binding("c", "why_not('checkpoint')", show=False),
        Binding("o", "open_adapter", "Open adapter"),
        Binding("d,escape", "detach", "Detach"),
        Binding("b", "retry_smaller", "Retry, half batch", tooltip="After out-of-memory: half the micro-batch, "
                "twice the grad accumulation, resumed from the last checkpoint"),
    ]

    def __init__(self, run_dir: Path | None = None, *, name: str | None = None, id: str | None = None):
        super().__init__(name=name, id=id)
        self.run_dir: Path | None = Path(run_dir) if run_dir else None
        self.view: RunView = RunView()
        self.state: str = ""
        self.pid: int | None = None
        self.log_lines: list[str] = []
        self._generation = 0
        self._watching = False  # the watched run is active (tailed fast)
        self._following = False  # the watcher thread runs (it keeps following an ended run, slowly)

    # -- layout -------------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static("No run attached: open one from Runs, or launch one from Setup.", id="mon-empty")
        with Vertical(id="mon-body"):
            yield Static(id="mon-title")
            with Horizontal(id="mon-progress-row"):
                yield ProgressBar(total=None, show_eta=False, show_percentage=True, id="mon-progress")
                yield Static(id="mon-steps")
            yield Static(id="mon-stats")
            yield Static(id="mon-banner")
            with Horizontal(id="mon-main"):
                yield LossChart(id="mon-chart")
                with Vertical(id="mon-side"):
                    yield GpuPanel(id="mon-gpu")
                    yield Static("lr", id="mon-lr-label")
                    yield LrSchedule(id="mon-lr")
            yield LogTail(id="mon-log")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        # the legend lives in the border: inside the plot it covered the base model's step-0 evaluation
        self.query_one("#mon-chart").border_title = LossChart.LEGEND
        self.query_one("#mon-side").border_title = "GPU"
        self._sample_gpus()
        if self.run_dir is not None:
            self.attach(self.run_dir)
        else:
            self.add_class("-empty")

    def on_resize(self) -> None:
        # the title, steps and figures lines fit their width: measure again once laid out anew
        if self.run_dir is not None:
            self.call_after_refresh(self._render_view)

    def on_screen_resume(self) -> None:
        # back from a detach (or another screen): tail again if we stopped
        if self.run_dir is not None and not self._following:
            self.attach(self.run_dir)

    def on_unmount(self) -> None:
        self.workers.cancel_group(self, "run")
        self.workers.cancel_group(self, "gpu")

    # -- attaching -----------------------------------------------------------------------------------------------

    def attach(self, run_dir: Path) -> None:
        """Watch ``run_dir``: reset the display and replay its events from the start."""
        self.run_dir = Path(run_dir)
        self._generation += 1
        self.view, self.state, self.pid, self.log_lines = RunView(name=self.run_dir.name), "", None, []
        if not self.is_mounted:
            return
        self.remove_class("-empty")
        self.refresh_bindings()  # d Detach: there is a run now
        self._render_view()
        self.query_one(LogTail).set_lines([])
        self._watching = self._following = True
        self._watch(self.run_dir, self._generation)

    def _rewatch(self) -> None:
        """Start the watcher again after it failed (the run's history is folded again from the start)."""
        if self.run_dir is not None and not self._following and self.is_mounted:
            self._watching = self._following = True
            self._watch(self.run_dir, self._generation)

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        if worker.group == "run":
            self._watching = self._following = False
        super().worker_failed(worker, error)

    @work(thread=True, exclusive=True, exit_on_error=False, group="run", description="Watching run")
    def _watch(self, run_dir: Path, generation: int) -> None:
        worker = get_current_worker()
        run = RunDir(run_dir)
        tail = EventTail(run.events_path)
        model = RunModel()
        try:  # the planned learning rate (the lr panel draws it whole)
            schedule = run.config().train.model_dump(include={"lr", "scheduler", "warmup_ratio", "warmup_steps"})
        except Exception:  # noqa: BLE001 - no config (or not one this version reads): no plan, the rest still shows
            schedule = {}
        log_sig: tuple | None = None
        last_state: tuple | None = None
        last_post = 0.0
        ended = False
        while not worker.is_cancelled:
            batch = tail.poll()
            if tail.reset:  # the events file was replaced: fold it again
                model = RunModel()
            if batch:
                model.apply(batch)
            summary = summarize(run, model.fold, now=time.time(), tail=tail)
            if not summary.state.active:
                # the run ended: read anything written just before its status changed
                more = tail.poll()
                if more:
                    model.apply(more)
                    batch = batch + more
                    summary = summarize(run, model.fold, now=time.time(), tail=tail)
            state, pid = summary.state, summary.pid
            tick = state.active and time.monotonic() - last_post >= TICK_INTERVAL
            if batch or (state, pid) != last_state or tick:
                view = model.snapshot(summary)
                view.schedule = schedule
                self.post_message(RunUpdated(run_dir, generation, view, state, pid))
                last_state, last_post = (state, pid), time.monotonic()
            try:
                st = run.log_path.stat()
                sig: tuple | None = (st.st_size, st.st_mtime_ns)
            except OSError:
                sig = None
            if sig != log_sig:
                log_sig = sig
                self.post_message(LogUpdated(run_dir, generation, run.log_tail(LOG_LINES)))
            if state.active == ended:  # changed between active and ended
                ended = not state.active
                self.post_message(WatchEnded(run_dir, generation, state) if ended
                                  else RunResumedElsewhere(run_dir, generation))
            deadline = time.monotonic() + (IDLE_POLL_INTERVAL if ended else POLL_INTERVAL)
            while not worker.is_cancelled and time.monotonic() < deadline:
                time.sleep(min(0.05, POLL_INTERVAL))

    @work(thread=True, exclusive=True, exit_on_error=False, group="gpu", description="Sampling GPUs")
    def _sample_gpus(self) -> None:
        worker = get_current_worker()
        sampler = make_sampler(self.pid)
        while not worker.is_cancelled:
            sampler.pid = self.pid if self.state in ("running", "starting", "stopping") else None
            self.post_message(GpuSampled(sampler.sample()))
            deadline = time.monotonic() + GPU_INTERVAL
            while not worker.is_cancelled and time.monotonic() < deadline:
                time.sleep(0.05)

    # -- messages ------------------------------------------------------------------------------------------------

    @on(RunUpdated)
    def _run_updated(self, message: RunUpdated) -> None:
        if message.generation != self._generation:
            return
        self.view, self.pid = message.view, message.pid
        changed = message.state != self.state
        self.state = message.state
        with self.app.batch_update():
            self._render_view()
        if changed:
            self.refresh_bindings()

    @on(LogUpdated)
    def _log_updated(self, message: LogUpdated) -> None:
        if message.generation != self._generation:
            return
        self.log_lines = message.lines
        self.query_one(LogTail).set_lines(message.lines)

    @on(WatchEnded)
    def _watch_ended(self, message: WatchEnded) -> None:
        if message.generation == self._generation:
            self._watching = False

    @on(RunResumedElsewhere)
    def _watch_again(self, message: RunResumedElsewhere) -> None:
        if message.generation == self._generation:
            self._watching = True

    @on(GpuSampled)
    def _gpu_sampled(self, message: GpuSampled) -> None:
        self.query_one(GpuPanel).update_snapshot(message.snapshot)

    # -- rendering -----------------------------------------------------------------------------------------------

    def _render_view(self) -> None:
        v, state = self.view, self.state
        badge = state  # the fold's word, as Runs, the Queue and `loratui runs` say it ('stopping' included)
        title, steps, stats = (self.query_one(f"#mon-{w}", Static) for w in ("title", "steps", "stats"))
        width = self.size.width - 2  # before the first layout: the screen's, less the padding
        title.update(title_text(v, badge, self.run_dir.name if self.run_dir else "", title.content_region.width
                                or width))
        bar = self.query_one("#mon-progress", ProgressBar)
        bar.update(total=v.max_steps or None, progress=v.step)
        steps.update(steps_text(v, state, steps.content_region.width or None))
        stats.update(stats_text(v, state, stats.content_region.width or width))
        self._render_banner()
        self.query_one(LossChart).set_data(v.loss_points, v.eval_points, v.max_steps)
        cuts = [(a["from_step"], a["lr_factor"]) for a in v.alerts or [] if a.get("lr_factor") is not None]
        self.query_one("#mon-lr", LrSchedule).show(v.schedule, v.max_steps, v.step, cuts)
        plan = f" · {v.schedule.get('scheduler')} plan" if v.schedule and v.max_steps else ""
        self.query_one("#mon-lr-label", Static).update(
            Text.assemble(("lr ", "bold"), format_lr(v.lr), (plan, "dim")))
        self.query_one(GpuPanel).set_run_info(v.device, v.memory, v.gpus)
        self.query_one("#mon-side").border_title = side_title(v)

    def _render_banner(self) -> None:
        banner = self.query_one("#mon-banner", Static)
        text, kind = banner_text(self.view, self.state, self.pid, self._oom_failure())
        banner.remove_class("-shown", "-error", "-ok", "-warn")
        banner.update(text)
        if kind:
            banner.add_class("-shown", f"-{kind}")
