"""The one fold of the run protocol: a stream of events (and status.json) in, a :class:`RunSummary` out.

:class:`RunFold` folds a stream into a :class:`RunSummary`: state, progress, elapsed over the whole run (resumed parts
included, ticking between steps), ETA, tokens/s, eval metrics, train loss, error. The CLI (``loratui runs``), the
Runs screen, the Monitor and Compare all show what it computes, so they cannot disagree.

Light module (pydantic only, through :mod:`loratui.core.protocol`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from loratui.core.preference import reward_fields
from loratui.core.protocol import (
    LIFECYCLE_KINDS, TERMINAL_KINDS, CheckpointEvent, EvalEvent, Event, FailedEvent, FinishedEvent, MemoryEvent, PhaseEvent,
    ProtocolError, ResumedEvent, RunState, RunStatus, StartedEvent, StepEvent, StoppedEvent, parse_event, parse_status,
)
from loratui.core.fold_state import run_state
from loratui.core.run_summary import RunSummary  # noqa: F401 - re-exported (the fold's output)
from loratui.core.stall import STALL_FACTOR, STALL_MIN_S, StallWatch  # the watchdog's rule (tests set these here)
from loratui.core.step_history import StepHistory

_EVAL_SKIP = ("kind", "time", "step", "epoch", "examples", "final")


class RunFold:
    """Folds events into a :class:`RunSummary`. Incremental (``add`` each event once); one owner at a time."""

    def __init__(self) -> None:
        self.s = RunSummary()
        # wall time: closed parts plus the open one
        self._closed = 0.0
        self._seg_start: float | None = None
        self._seg_last: float | None = None
        self._seg_started = False  # the open part had a 'started' event
        self._last_work: float | None = None  # newest non-phase event time of the open part
        self._stall = StallWatch()  # the watchdog's rule (core.stall)
        self._phase_from: float | None = None  # first phase event since the newest non-phase event
        self._terminal_time: float | None = None
        self._lifecycle_time: float | None = None
        # rate and ETA
        self._origin: tuple[float, int] | None = None
        self._step_time: float | None = None
        self._eta_at_step: float | None = None
        # throughput: tokens and training seconds of the closed parts, the open part's first and newest step
        self._rate_done = (0.0, 0.0)
        self._rate_first: tuple[float, float] | None = None
        self._rate_last: tuple[float, float] | None = None
        # epochs per step (linear in a run): the epoch of a step past the newest logged one (a stop, a resume)
        self._epoch_rate: float | None = None
        # train loss over the steps that count, evaluations by step, the adapter's step
        self.history = StepHistory()
        self._finished_train_loss: float | None = None
        self._finished_eval: dict = {}

    # -- input -----------------------------------------------------------------------------------------------------

    def add_all(self, events: Iterable[Event | dict]) -> "RunFold":
        for ev in events:
            self.add(ev)
        return self

    def add(self, ev: Event | dict) -> Event | None:
        """Fold one event (a dict is parsed first; one that does not fit is counted in ``skipped``)."""
        if not isinstance(ev, Event):
            try:
                ev = parse_event(ev)
            except ProtocolError:
                self.s.skipped += 1
                return None
        self.s.events += 1
        self._clock(ev)
        handler = getattr(self, f"_on_{ev.kind}", None)
        if handler is not None:
            handler(ev)
        if ev.kind in LIFECYCLE_KINDS:
            self._lifecycle_time = ev.time
        return ev

    def _clock(self, ev: Event) -> None:
        t = ev.time
        if t is None:
            return
        if self.s.started is None:
            self.s.started = t
        new_process = ev.kind == "started" or (ev.kind == "phase" and ev.get("phase") == "checking")
        if new_process and self._seg_start is not None and self._seg_started:
            # a new engine process without a final event from the previous one (it crashed): close that part
            # (at its "checking", the first thing each engine says: one that fails before "started" is its own
            # part, and the time the run lay dead between them is neither's)
            end = self._last_work if self._last_work is not None else self._seg_start
            self._closed += max(0.0, end - self._seg_start)
            if ev.kind == "phase" or self._phase_from is None or self._phase_from < end:
                self._seg_start = t
            else:  # an older engine said "checking" after its first steps: its phases before "started" are its own
                self._seg_start = self._phase_from
            self._seg_last = t
        if self._seg_start is None:
            self._seg_start = self._seg_last = t
            self._seg_started = False
        self._stall.add(ev, new_process)
        self._seg_last = max(self._seg_last or t, t)
        if ev.kind == "phase":
            if self._phase_from is None:
                self._phase_from = t
        else:
            self._phase_from = None
            self._last_work = t
        if new_process:
            self._seg_started = True
        if ev.kind in TERMINAL_KINDS:
            self._closed += max(0.0, self._seg_last - self._seg_start)
            self._seg_start = self._seg_last = self._last_work = self._phase_from = None
            self._seg_started = False
            self._terminal_time = t
            self.s.ended = t

    def _on_alert(self, ev: Event) -> None:
        keys = ("step", "alert", "message", "from_step", "lr_factor")  # the last two: a roll-back's (the lr panel)
        self.s.alerts = [*self.s.alerts, {k: ev.get(k) for k in keys if k in keys[:3] or ev.get(k) is not None}][-50:]

    def _on_phase(self, ev: PhaseEvent) -> None:
        self.s.phase = ev.phase

    def _on_started(self, ev: StartedEvent) -> None:
        s = self.s
        for key in ("model", "method", "objective", "task", "device", "precision"):
            value = getattr(ev, key)
            if value is not None:
                setattr(s, key, str(value))
        if ev.run:
            s.name = s.name or ev.run
        for key in ("trainable_params", "total_params", "train_examples", "eval_examples"):
            if getattr(ev, key) is not None:
                setattr(s, key, getattr(ev, key))
        if ev.max_steps:
            s.max_steps = ev.max_steps
        if ev.epochs is not None:
            s.epochs = ev.epochs
        if ev.world_size:
            s.world_size = int(ev.world_size)
        if ev.distributed:
            s.distributed = str(ev.distributed)
        if ev.gpus is not None:
            s.gpus = [g for g in ev.gpus if isinstance(g, dict)]
        if ev.effective_batch:
            s.effective_batch = int(ev.effective_batch)
        s.lifecycle = "started"
        s.phase = ""  # a new engine process: the last one's phase (saving...) is over
        s.failure = s.error = None
        s.ended = None
        self._origin = None
        self._eta_at_step = None
        self._close_rate()

    def _close_rate(self) -> None:
        """A new engine process counts its tokens and seconds from zero: keep the part that ended."""
        tokens, secs = self._rate_done
        if self._rate_first is not None and self._rate_last is not None:
            tokens += self._rate_last[0] - self._rate_first[0]
            secs += self._rate_last[1] - self._rate_first[1]
        self._rate_done, self._rate_first, self._rate_last = (tokens, secs), None, None

    def _on_resumed(self, ev: ResumedEvent) -> None:
        s = self.s
        s.lifecycle = "resumed"
        s.resumes += 1
        self._close_rate()
        s.failure = s.error = None
        if ev.step is not None:
            s.step = ev.step
            self._epoch_at_step()
            self.history.resumed(ev.step)  # the steps after it are trained again
        self._origin = None
        self._eta_at_step = None

    def _on_step(self, ev: StepEvent) -> None:
        s = self.s
        if ev.max_steps:
            s.max_steps = ev.max_steps
        s.step = ev.step
        for key in ("epoch", "lr", "grad_norm", "tokens_per_s"):
            if getattr(ev, key) is not None:
                setattr(s, key, getattr(ev, key))
        s.rewards = reward_fields(ev.__pydantic_extra__ or {}) or s.rewards  # a preference run's (issue 20)
        if ev.epoch is not None and ev.step > 0:
            self._epoch_rate = ev.epoch / ev.step
        if ev.loss is not None:
            s.loss, s.loss_step = ev.loss, ev.step
            self.history.add_loss(ev.step, ev.loss)
        if ev.tokens_seen is not None and ev.elapsed is not None:
            point = (float(ev.tokens_seen), float(ev.elapsed))
            if self._rate_first is None or point[1] < self._rate_first[1]:
                self._rate_first, self._rate_last = point, None  # the part's first line: warm-up, not counted
            else:
                self._rate_last = point
        t = ev.time
        if t is None:
            return
        if self._origin is None:
            self._origin = (t, ev.step)
        self._step_time = t
        if ev.eta_s is not None:
            self._eta_at_step = max(0.0, ev.eta_s)
        else:
            t0, s0 = self._origin
            if s.max_steps and ev.step > s0 and t > t0:
                self._eta_at_step = max(0.0, (s.max_steps - ev.step) * (t - t0) / (ev.step - s0))

    def _on_eval(self, ev: EvalEvent) -> None:
        s = self.s
        metrics = {k: v for k, v in ev.model_dump().items()
                   if k not in _EVAL_SKIP and isinstance(v, (int, float)) and not isinstance(v, bool)}
        s.eval_metrics = metrics
        s.eval_step = ev.step
        self.history.add_eval(ev.step, ev.eval_loss, ev.accuracy, final=bool(ev.get("final")),
                              examples=ev.get("examples"))
        if ev.step == 0:
            return  # the base model's evaluation (step 0) is the curve's reference, never the run's "best"
        self._reached(ev.step)
        loss = ev.eval_loss
        if loss is not None and (s.best_eval_loss is None or loss < s.best_eval_loss):
            s.best_eval_loss, s.best_eval_step = loss, ev.step
        acc = ev.accuracy
        if acc is not None and (s.best_accuracy is None or acc > s.best_accuracy):
            s.best_accuracy = acc

    def _on_memory(self, ev: MemoryEvent) -> None:
        self.s.memory = {k: getattr(ev, k) for k in ("device", "allocated_gb", "reserved_gb", "peak_allocated_gb")}

    def _on_checkpoint(self, ev: CheckpointEvent) -> None:
        self.s.checkpoint = ev.path or ""
        self._reached(ev.step)

    def _reached(self, step: int | None) -> None:
        """A step an event other than the step's own says was trained (an evaluation, a checkpoint or a save at it,
        past the last logged step: logging_steps need not divide the run's last step)."""
        if step is not None and step > self.s.step:
            self.s.step = step
            self._epoch_at_step()

    def _epoch_at_step(self) -> None:
        """The epoch of ``s.step`` when no step event logged it (the stop's or the resume's step)."""
        if self._epoch_rate is not None:
            self.s.epoch = round(self._epoch_rate * self.s.step, 4)

    def _on_finished(self, ev: FinishedEvent) -> None:
        s = self.s
        s.lifecycle = "finished"
        s.phase = ""  # the part is over: no phase of it is current
        self._reached(ev.step)
        if ev.get("best_step") is not None:
            s.best_step = ev.get("best_step")
        if ev.adapter:
            s.adapter = ev.adapter
            self.history.adapter_step = s.best_step if s.best_step is not None else s.step
        self._finished_train_loss = ev.train_loss
        if ev.eval_loss is not None and s.step not in self.history.evals:  # an engine that sent no eval event
            self.history.add_eval(s.step, ev.eval_loss, final=True)
        extra = {k: v for k, v in (ev.__pydantic_extra__ or {}).items()
                 if k.startswith("eval_") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics = {k: v for k, v in (ev.eval or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _EVAL_SKIP}
        self._finished_eval = {**extra, **metrics,
                               **({"eval_loss": ev.eval_loss} if ev.eval_loss is not None else {})}

    def _on_stopped(self, ev: StoppedEvent) -> None:
        s = self.s
        s.lifecycle = "stopped"
        s.phase = ""
        self._reached(ev.step)
        if ev.adapter:
            s.adapter = ev.adapter
            self.history.adapter_step = s.step
        if ev.checkpoint:
            s.checkpoint = ev.checkpoint

    def _on_failed(self, ev: FailedEvent) -> None:
        s = self.s
        s.lifecycle = "failed"
        s.phase = ""
        s.failure = {k: getattr(ev, k) for k in ("error", "message", "hint", "field")}
        s.error = ev.message or ev.error or "failed"

    # -- output ----------------------------------------------------------------------------------------------------

    @property
    def terminal_time(self) -> float | None:
        """Time of the newest finished/stopped/failed event (None when the newest part has none)."""
        return self._terminal_time if self.s.lifecycle in TERMINAL_KINDS else None

    def summary(self, status: RunStatus | dict | None = None, *, live_pid: int | None = None,
                live_since: float | None = None, now: float | None = None, name: str | None = None,
                path: Path | None = None, problem: str | None = None, events_only: bool = False,
                stop_asked: bool = False) -> RunSummary:
        """The run as of ``now`` (None: as of its newest event; no ticking).

        ``live_pid``/``live_since``: the run's engine process when one is proven alive, and its start time;
        ``stop_asked``: that process was asked to stop.
        ``events_only``: nothing is known about processes; a part that started and did not end counts as running.
        """
        s = self.s
        if isinstance(status, dict):
            try:
                status = parse_status(status)
            except ProtocolError as err:
                problem = problem or str(err)
                status = None
        out = RunSummary(**{f: getattr(s, f) for f in RunSummary.__dataclass_fields__})
        out.eval_metrics = dict(s.eval_metrics)
        out.name = name or s.name
        out.path = path
        out.problem = problem
        out.state = self.state(status, live_pid=live_pid, live_since=live_since, broken=status is None and
                               problem is not None and problem.startswith("status.json"), stop_asked=stop_asked)
        if events_only and out.state == RunState.CRASHED and live_pid is None:
            out.state = RunState.RUNNING
        out.pid = live_pid if live_pid is not None else (status.pid if status else None)
        if status is not None:
            out.started = status.started or out.started
            if out.state in (RunState.FINISHED, RunState.STOPPED, RunState.FAILED):
                out.ended = out.ended or status.ended
            if out.state == RunState.FAILED and not out.error:
                out.error = status.error
            if not out.step and status.step:
                out.step = status.step
        allowed = self._stall.allowed(s.phase, s.max_steps, STALL_MIN_S, STALL_FACTOR)
        if out.state in (RunState.RUNNING, RunState.STOPPING) and now is not None and allowed is not None \
                and self._seg_last is not None:  # an engine that hangs while it stops is stalled too
            out.stall_after = allowed
            quiet = now - self._seg_last
            if quiet > allowed:
                out.state, out.stalled_for = RunState.STALLED, quiet
        active = out.state.active
        elapsed = self._closed
        if self._seg_start is not None:
            end = self._seg_last or self._seg_start
            if active and now is not None:
                end = max(end, now)
            elapsed += max(0.0, end - self._seg_start)
        out.elapsed = elapsed if s.started is not None else None
        out.eta = None
        if active and self._eta_at_step is not None and s.lifecycle in ("started", "resumed"):
            eta = self._eta_at_step
            if now is not None and self._step_time is not None:
                eta = max(0.0, eta - max(0.0, now - self._step_time))
            out.eta = eta
        elif out.state == RunState.FINISHED:
            out.eta = 0.0
        out.wall = None
        if s.started is not None:
            last = out.ended if out.ended is not None and not active else (self._seg_last or out.ended or s.started)
            if active and now is not None:
                last = max(last, now)
            out.wall = max(elapsed, last - s.started)
        tokens, secs = self._rate_done
        if self._rate_first is not None and self._rate_last is not None:
            tokens += self._rate_last[0] - self._rate_first[0]
            secs += self._rate_last[1] - self._rate_first[1]
        if secs > 0 and tokens > 0:
            out.tokens_per_s = tokens / secs
        out.train_loss = self.history.mean_loss if self.history.losses else self._finished_train_loss
        if out.lifecycle == "finished":
            out.final_eval = {**s.eval_metrics, **self._finished_eval}
        return out

    def state(self, status: RunStatus | None = None, *, live_pid: int | None = None,
              live_since: float | None = None, broken: bool = False, stop_asked: bool = False) -> RunState:
        """The run's state from its events, status.json and a live engine (see :func:`fold_state.run_state`)."""
        return run_state(self.s.lifecycle, self.terminal_time, self._lifecycle_time, status, live_pid=live_pid,
                         live_since=live_since, broken=broken, stop_asked=stop_asked)


def fold(events: Iterable[Event | dict], status: RunStatus | dict | None = None, **kw: Any) -> RunSummary:
    """Fold a whole stream at once (see :meth:`RunFold.summary` for the keywords)."""
    return RunFold().add_all(events).summary(status, **kw)
