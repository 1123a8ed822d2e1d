"""The run monitor: loss curves, progress, throughput, GPU panel and the engine's log, live from events.jsonl.

A thread worker tails the run's events file from the start (so attaching from a new app process replays the whole
history), folds events into a :class:`~loratui.ui.widgets.run_state.RunModel` (the run protocol's one fold, the
same numbers Runs and ``loratui runs`` show) and posts snapshots; a second thread samples the GPUs at 1 Hz. Neither
touches a widget: the screen renders what the messages carry. The watcher follows the run folder after the run
ends (slowly), so a resume from anywhere (``loratui train --resume``, another app) shows up without reopening.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Footer, ProgressBar, Sparkline, Static
from textual.worker import Worker, get_current_worker

from loratui.core.gpu import GpuSampler
from loratui.core.fmt import format_count, format_duration
from loratui.core.protocol import EventTail, state_style
from loratui.core.runs import RunDir, request_checkpoint, stop_run, summarize
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.widgets.gpu_panel import GpuPanel, GpuSampled
from loratui.ui.widgets.log_tail import LogTail
from loratui.ui.widgets.loss_chart import LossChart
from loratui.ui.widgets.modals import ConfirmModal
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


# -- messages (posted from the watcher thread) ----------------------------------------------------------------------


@dataclass
class RunUpdated(Message):
    """A new picture of the watched run; a backlog collapses into the newest."""

    run_dir: Path
    generation: int
    view: RunView
    state: str
    """a :class:`RunState`: running | starting | finished | stopped | failed | crashed | ..."""
    pid: int | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunUpdated) and message.generation == self.generation


@dataclass
class LogUpdated(Message):
    """The engine log's newest lines."""

    run_dir: Path
    generation: int
    lines: list[str]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogUpdated) and message.generation == self.generation


@dataclass
class WatchEnded(Message):
    """The watcher saw the run end (terminal event, or the process vanished); it keeps following, slowly."""

    run_dir: Path
    generation: int
    state: str


@dataclass
class RunResumedElsewhere(Message):
    """The ended run is active again (resumed by this app, another one, or ``loratui train --resume``)."""

    run_dir: Path
    generation: int


class MonitorScreen(LoratuiScreen):
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
    MonitorScreen #mon-main { height: 1fr; min-height: 8; width: 100%; }
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
                    yield Sparkline([], id="mon-lr")
            yield LogTail(id="mon-log")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#mon-chart").border_title = "loss"
        self.query_one("#mon-side").border_title = "GPU"
        self._sample_gpus()
        if self.run_dir is not None:
            self.attach(self.run_dir)
        else:
            self.add_class("-empty")

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
                self.post_message(RunUpdated(run_dir, generation, model.snapshot(summary), state, pid))
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
            sampler.pid = self.pid if self.state in ("running", "starting") else None
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
        name = v.name or (self.run_dir.name if self.run_dir else "")
        title = Text.assemble((name, "bold"), " ", (f" {state or 'loading'} ", _badge(state)))
        desc = " · ".join(x for x in (_short_model(v.model), v.method, _world(v), v.precision) if x)
        if v.trainable_params:
            share = f" ({100 * v.trainable_params / v.total_params:.2f}%)" if v.total_params else " trainable"
            desc += f" · {format_count(v.trainable_params)}{share}"
        if desc:
            title.append("  " + desc, style="dim")
        self.query_one("#mon-title", Static).update(title)

        bar = self.query_one("#mon-progress", ProgressBar)
        bar.update(total=v.max_steps or None, progress=v.step)
        steps = f"step {v.step}/{v.max_steps}" if v.max_steps else f"step {v.step}"
        if v.epoch is not None:
            steps += f" · epoch {v.epoch:.2f}" + (f"/{v.epochs:g}" if v.epochs else "")
        if v.phase and state in ("running", "starting") and v.phase != "training":
            steps += f" · {v.phase}…"
        self.query_one("#mon-steps", Static).update(steps)

        stats = Text()
        _stat(stats, "loss", _num(v.loss))
        if v.eval_loss is not None:
            value = _num(v.eval_loss)
            if v.best_eval_loss is not None and v.best_eval_loss < v.eval_loss:
                value += f" (best {_num(v.best_eval_loss)}@{v.best_eval_step})"
            _stat(stats, "eval", value)
        if v.best_accuracy is not None:
            _stat(stats, "acc", f"{v.best_accuracy:.3f}")
        _stat(stats, "lr", f"{v.lr:.1e}" if v.lr else "0" if v.lr == 0 else "-")
        _stat(stats, "tok/s", format_count(int(v.tokens_per_s)) if v.tokens_per_s else "-")
        _stat(stats, "time", format_duration(v.elapsed))
        if state in ("running", "starting") and not v.phase.startswith("final eval"):
            _stat(stats, "ETA", format_duration(v.eta))  # the final evaluation says itself what it is doing
        self.query_one("#mon-stats", Static).update(stats)

        self._render_banner()
        self.query_one(LossChart).set_data(v.loss_points, v.eval_points, v.max_steps)
        self.query_one("#mon-lr", Sparkline).data = list(v.lr_points[1])
        self.query_one("#mon-lr-label", Static).update(
            Text.assemble(("lr ", "bold"), f"{v.lr:.2e}" if v.lr is not None else "-", (" (schedule)", "dim")))
        self.query_one(GpuPanel).set_run_info(v.device, v.memory, v.gpus)
        self.query_one("#mon-side").border_title = _side_title(v)

    def _render_banner(self) -> None:
        banner = self.query_one("#mon-banner", Static)
        v, state = self.view, self.state
        banner.remove_class("-shown", "-error", "-ok", "-warn")
        if state == "failed":
            f = v.failure or {}
            text = Text.assemble(("✖ failed", "bold red"), "  ",
                                 (f"{f.get('error')}: " if f.get("error") else "", "bold"), f.get("message") or "")
            if f.get("hint"):
                text.append("\n→ ", style="bold")
                text.append(str(f["hint"]), style="bold")
            if f.get("field"):
                text.append(f"  (field {f['field']})", style="dim")
            if self._oom_failure():
                text.append("\n")
                text.append("b", style="bold reverse")
                text.append(" retries with half the micro-batch and twice the grad accumulation, from the last "
                            "checkpoint")
            banner.update(text)
            banner.add_class("-shown", "-error")
        elif state == "crashed":
            pid = f" (pid {self.pid})" if self.pid else ""
            text = Text.assemble(("✖ crashed", "bold red"), f"  the engine process{pid} ended without a final event")
            text.append("\n→ read the log below; resume from the newest checkpoint in Runs (u)", style="bold")
            banner.update(text)
            banner.add_class("-shown", "-error")
        elif state == "finished":
            text = Text.assemble(("✔ finished", "bold green"), f" in {format_duration(v.elapsed)}")
            if v.train_loss is not None:
                text.append(f" · train loss {_num(v.train_loss)}")
            final = v.final_eval
            if final.get("accuracy") is not None:
                text.append(f" · accuracy {final['accuracy']:.3f}")
            elif final.get("eval_loss") is not None:
                text.append(f" · eval {_num(final['eval_loss'])}")
            if v.adapter:
                text.append(" · adapter saved (")  # the journeys read these words; 'o' opens it, short for 80 cols
                text.append("o", style="bold reverse")
                text.append(")")
            banner.update(text)
            banner.add_class("-shown", "-ok")
        elif state == "stopped":
            text = Text.assemble(("■ stopped", "bold yellow"), f" at step {v.step}")
            if v.adapter:
                text.append(" · adapter saved")
            text.append(" · resume it from Runs (u)", style="dim")
            banner.update(text)
            banner.add_class("-shown", "-warn")
        elif state == "stalled":
            text = Text.assemble(("⏸ stalled", "bold yellow"), f" at step {v.step}: no progress for "
                                 f"{format_duration(v.stalled_for)}")
            text.append(" · its engine lives but says nothing (a hung collective, a stuck loader, a frozen disk)",
                        style="dim")
            banner.update(text)
            banner.add_class("-shown", "-warn")
        else:
            banner.update("")

    # -- actions -------------------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("stop", "checkpoint"):
            return self.state in ("running", "starting", "stalled")
        if action == "open_adapter":
            return self._adapter_path() is not None and self.state in ("finished", "stopped")
        if action == "retry_smaller":
            return self._oom_failure()
        return True

    def _oom_failure(self) -> bool:
        if self.state != "failed" or self.run_dir is None:
            return False
        f = self.view.failure or {}
        return f.get("error") == "OutOfMemoryError" or "out of gpu memory" in str(f.get("message") or "").lower()

    def action_retry_smaller(self) -> None:
        """One key after out-of-memory: same effective batch, smaller steps, resumed from the last checkpoint."""
        if not self._oom_failure():
            return
        from loratui.core.errors import LoratuiError
        from loratui.core.retry import retry_after_oom

        run = RunDir(self.run_dir)
        try:
            pid = retry_after_oom(run)
        except LoratuiError as err:
            self.notify(str(err), severity="error")
            return
        t = run.config().train
        self.notify(f"Retrying {run.name} with micro-batch {t.batch_size} x grad_accum {t.grad_accum} (pid {pid}).")

    def _adapter_path(self) -> Path | None:
        if not self.view.adapter or self.run_dir is None:
            return None
        path = Path(self.view.adapter)
        return path if path.is_absolute() else self.run_dir / path

    def action_stop(self) -> None:
        if self.run_dir is None or self.state not in ("running", "starting"):
            self.notify("This run is not running.", severity="warning")
            return
        run = RunDir(self.run_dir)

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            if stop_run(run):
                self.notify(f"Stopping {run.name}: the adapter is saved at the end of this step.")
            else:
                self.notify(f"{run.name} is not running any more.", severity="warning")

        self.app.push_screen(ConfirmModal(
            f"Stop {run.name}?",
            "The engine finishes the current step, saves the adapter and a checkpoint, then exits. "
            "You can resume it later from Runs.", yes="Stop run"), confirmed)

    def action_checkpoint(self) -> None:
        if self.run_dir is None:
            return
        run = RunDir(self.run_dir)
        if request_checkpoint(run):
            self.notify("Checkpoint requested: saved at the end of the current step.")
        else:
            self.notify(f"{run.name} is not running.", severity="warning")

    def action_open_adapter(self) -> None:
        path = self._adapter_path()
        if path is None or not path.is_dir():
            self.notify("This run has no saved adapter yet.", severity="warning")
            return
        self.app.open_adapters(path)

    def action_detach(self) -> None:
        """Leave the monitor for Runs; the run keeps going (its engine is its own process)."""
        self.workers.cancel_group(self, "run")
        self._watching = self._following = False
        if self.run_dir is not None and self.state in ("running", "starting"):
            self.notify(f"Detached: {self.run_dir.name} keeps running. Reattach from Runs.")
        self.app.switch_mode("runs")


# -- formatting helpers ---------------------------------------------------------------------------------------------


def _badge(state: str) -> str:
    return f"{state_style(state)} reverse"


def _world(v: RunView) -> str:
    """'DDP x 2 · batch 64' for a run on several processes (the started event's strategy and effective batch)."""
    if v.world_size <= 1:
        return ""
    text = f"{(v.distributed or 'ranks').upper()} x {v.world_size}"
    return text + (f" · batch {v.effective_batch}" if v.effective_batch else "")


def _side_title(v: RunView) -> str:
    world = _world(v)
    return f"GPU · {world}" if world else "GPU"


def _short_model(model: str) -> str:
    return model.rstrip("/").split("/")[-1] if model else ""


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}" if abs(x) < 10 else f"{x:.1f}"


def _stat(text: Text, label: str, value: str) -> None:
    if text:
        text.append("  ")
    text.append(f"{label} ", style="dim")
    text.append(value, style="bold")
