"""The run protocol between the engine and every reader: typed events, run states, and the one fold.

- Events are pydantic models with ``kind`` as the discriminator. Extra fields are kept (a later engine may add
  ``ranks``, ``gpus``, ``world_size``...), so old readers open new run folders and new readers old ones.
- :class:`EventWriter` (the engine) validates every event through its model and writes strict JSON: NaN and
  infinities become ``null``. :class:`EventTail` (every reader) parses lines through the models; a half-written
  last line waits for its end, and unknown or malformed lines (also binary garbage) are skipped and counted.
- :class:`RunFold` folds a stream into a :class:`RunSummary`: state, progress, elapsed over the whole run (resumed
  parts included, ticking between steps), ETA, tokens/s, eval metrics, train loss, error. The CLI
  (``loratui runs``), the Runs screen and the Monitor all show what it computes, so they cannot disagree.
- ``docs/CONTRACTS.md`` holds :func:`contract_markdown`'s output between markers; a test fails when they drift
  (regenerate with ``python -m loratui.core.protocol``).

Light module (pydantic only): the app, the CLI and the engine all import it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# -- run states ------------------------------------------------------------------------------------------------------


class RunState(str, Enum):
    """What a run is doing now. ``starting``: its engine process lives but has not announced the run yet."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"
    CRASHED = "crashed"
    UNREADABLE = "unreadable"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def style(self) -> str:
        return STATE_STYLES[self]

    @property
    def active(self) -> bool:
        """An engine process works on it (stop and checkpoint-now make sense)."""
        return self in (RunState.STARTING, RunState.RUNNING)

    @property
    def resumable(self) -> bool:
        return self in (RunState.STOPPED, RunState.CRASHED)


#: Rich styles of each state: the one place every view takes its colours from
STATE_STYLES: dict[str, str] = {
    RunState.CREATED: "dim", RunState.STARTING: "bold cyan", RunState.RUNNING: "bold green",
    RunState.FINISHED: "bold blue", RunState.STOPPED: "bold yellow", RunState.FAILED: "bold red",
    RunState.CRASHED: "bold red", RunState.UNREADABLE: "bold magenta",
}

#: the kinds that end an engine process's part of a run
TERMINAL_KINDS = ("finished", "stopped", "failed")
LIFECYCLE_KINDS = ("started", "resumed", *TERMINAL_KINDS)


def state_style(state: str | RunState | None) -> str:
    return STATE_STYLES.get(state or "", "bold")


# -- events ------------------------------------------------------------------------------------------------------------


class Event(BaseModel):
    """Every event: ``kind`` and ``time`` (seconds since the epoch, the engine's clock); extra fields are kept."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    kind: str
    time: Optional[float] = None

    # dict-style reading, so code written against the JSON lines keeps working
    def get(self, key: str, default: Any = None) -> Any:
        value = getattr(self, key, None) if key in type(self).model_fields else (self.__pydantic_extra__ or {}).get(key)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        if key in type(self).model_fields:
            return getattr(self, key)
        extra = self.__pydantic_extra__ or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        return key in type(self).model_fields or key in (self.__pydantic_extra__ or {})

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


class PhaseEvent(Event):
    """What the engine is busy with before, between and after training steps."""

    kind: Literal["phase"] = "phase"
    phase: str = ""
    """checking | preparing data | loading model | evaluating the base model | training | saving"""


class StartedEvent(Event):
    """The engine set up the run (written by every engine process, resumed ones too)."""

    kind: Literal["started"] = "started"
    run: Optional[str] = None
    model: Optional[str] = None
    method: Optional[str] = None
    task: Optional[str] = None
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    train_examples: Optional[int] = None
    eval_examples: Optional[int] = None
    """Held-out examples in each evaluation during training (``data.eval_samples`` may cut the curve's set)."""
    final_eval_examples: Optional[int] = None
    """Held-out examples in the closing evaluation (the whole held-out set)."""
    max_steps: Optional[int] = None
    epochs: Optional[float] = None
    device: Optional[str] = None
    precision: Optional[str] = None
    labels: Optional[list[Any]] = None
    data_stats: Optional[dict] = None
    resumed: bool = False
    world_size: Optional[int] = None
    """Processes training together (1: one process; several: one a card under torchrun)."""
    distributed: Optional[str] = None
    """none | ddp | fsdp"""
    gpus: Optional[list[Any]] = None
    """This node's cards: {index (as NVML numbers it), name, memory_total (bytes)}."""
    per_device_batch: Optional[int] = None
    grad_accum: Optional[int] = None
    effective_batch: Optional[int] = None
    """per_device_batch x world_size x grad_accum: sequences an optimizer step."""


class ResumedEvent(Event):
    """Training continues from a checkpoint (after ``started``)."""

    kind: Literal["resumed"] = "resumed"
    checkpoint: Optional[str] = None
    step: Optional[int] = None


class StepEvent(Event):
    """A logged optimizer step."""

    kind: Literal["step"] = "step"
    step: int
    max_steps: Optional[int] = None
    epoch: Optional[float] = None
    loss: Optional[float] = None
    lr: Optional[float] = None
    grad_norm: Optional[float] = None
    tokens_per_s: Optional[float] = None
    tokens_seen: Optional[int] = None
    elapsed: Optional[float] = None
    """Seconds since this engine process began training."""
    eta_s: Optional[float] = None
    """The engine's estimate of the seconds left (the same figure its progress line prints)."""


class EvalEvent(Event):
    """An evaluation; every metric the trainer reported is kept (``f1`` and others as extra fields)."""

    kind: Literal["eval"] = "eval"
    step: Optional[int] = None
    epoch: Optional[float] = None
    eval_loss: Optional[float] = None
    perplexity: Optional[float] = None
    accuracy: Optional[float] = None
    f1: Optional[float] = None


class CheckpointEvent(Event):
    """A trainer checkpoint was saved."""

    kind: Literal["checkpoint"] = "checkpoint"
    step: Optional[int] = None
    path: Optional[str] = None


class MemoryEvent(Event):
    """Torch's view of the GPU memory of this process (GiB)."""

    kind: Literal["memory"] = "memory"
    step: Optional[int] = None
    device: Optional[str] = None
    allocated_gb: Optional[float] = None
    reserved_gb: Optional[float] = None
    peak_allocated_gb: Optional[float] = None


class StoppedEvent(Event):
    """Stopped on request; the adapter and a checkpoint were saved at ``step`` (null: before training began)."""

    kind: Literal["stopped"] = "stopped"
    step: Optional[int] = None
    adapter: Optional[str] = None
    checkpoint: Optional[str] = None
    message: Optional[str] = None


class FinishedEvent(Event):
    """Training reached its last step and the output was saved."""

    kind: Literal["finished"] = "finished"
    step: Optional[int] = None
    adapter: Optional[str] = None
    runtime_s: Optional[float] = None
    """Seconds of this engine process's training (the whole run's time is the fold's ``elapsed``)."""
    train_loss: Optional[float] = None
    eval_loss: Optional[float] = None
    """The final evaluation's loss (the fold falls back to the last ``eval`` event when null)."""
    eval: Optional[dict] = None
    """The final evaluation's metrics (the last evaluation's, also when it fell on the final step)."""


class FailedEvent(Event):
    """The run failed: a one-line message and a hint saying what to do."""

    kind: Literal["failed"] = "failed"
    step: Optional[int] = None
    error: Optional[str] = None
    message: Optional[str] = None
    hint: Optional[str] = None
    field: Optional[str] = None


EVENT_TYPES: tuple[type[Event], ...] = (
    StartedEvent, PhaseEvent, ResumedEvent, StepEvent, EvalEvent, CheckpointEvent, MemoryEvent, StoppedEvent,
    FinishedEvent, FailedEvent,
)
EVENT_KINDS: dict[str, type[Event]] = {t.model_fields["kind"].default: t for t in EVENT_TYPES}
AnyEvent = Annotated[Union[tuple(EVENT_TYPES)], Field(discriminator="kind")]  # type: ignore[valid-type]
_ADAPTER: TypeAdapter = TypeAdapter(AnyEvent)


class ProtocolError(ValueError):
    """An event the protocol does not allow (unknown kind or wrong field types)."""


def to_json_value(value: Any) -> Any:
    """Plain JSON values: non-finite floats become None, numpy/torch scalars numbers, paths strings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json_value(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return to_json_value(item())
        except Exception:  # noqa: BLE001 - not a scalar after all
            pass
    try:
        return to_json_value(float(value))
    except (TypeError, ValueError):
        return str(value)


def parse_event(obj: Any) -> Event:
    """A typed event from a dict (or an event); raises :class:`ProtocolError` when it does not fit."""
    if isinstance(obj, Event):
        return obj
    if not isinstance(obj, dict):
        raise ProtocolError(f"an event is a JSON object, not {type(obj).__name__}")
    kind = obj.get("kind")
    if kind not in EVENT_KINDS:
        raise ProtocolError(f"unknown event kind {kind!r}")
    try:
        return _ADAPTER.validate_python(obj)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "event"
        raise ProtocolError(f"{kind} event: {where}: {first.get('msg')}") from None


def _nan_to_none(token: str) -> None:
    return None  # NaN / Infinity written by an older engine read as null


def parse_line(line: bytes | str) -> Event:
    """One events.jsonl line as a typed event; raises :class:`ProtocolError` when it can't be read."""
    try:
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        obj = json.loads(text, parse_constant=_nan_to_none)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ProtocolError(f"not JSON ({type(err).__name__})") from None
    return parse_event(obj)


class EventWriter:
    """Appends events to events.jsonl, one strict JSON object a line, flushed per event (the engine's side)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", buffering=1, encoding="utf-8")

    def emit(self, kind: str, **data: Any) -> dict:
        """Validate ``{"kind": kind, "time": now, **data}`` through its model, write it, return it as written."""
        event = to_json_value({"kind": kind, "time": round(time.time(), 3), **data})
        parse_event(event)  # raises ProtocolError: a wrong event never reaches the file
        self._fh.write(json.dumps(event, allow_nan=False) + "\n")
        self._fh.flush()
        return event

    def close(self) -> None:
        self._fh.close()


class EventTail:
    """Reads new complete events from an events file.

    A half-written last line is kept until its newline arrives. Lines that are not JSON, not an object, of an
    unknown kind or with wrong field types are skipped and counted (``skipped``; ``problems`` keeps the first few
    reasons with their line numbers), never fatal. A file that shrank (replaced) is read again from the start and
    ``reset`` is set so the caller can start a fresh fold.
    """

    MAX_LINE = 1 << 20  # a "line" longer than this without a newline is garbage, not a half-written event

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.line_no = 0
        self.skipped = 0
        self.problems: list[str] = []
        self.reset = False
        self._partial = b""

    def poll(self) -> list[Event]:
        self.reset = False
        try:
            with open(self.path, "rb") as fh:
                size = fh.seek(0, 2)
                if size < self.offset:  # replaced or truncated: start over
                    self.offset, self.line_no, self.skipped, self._partial = 0, 0, 0, b""
                    self.problems = []
                    self.reset = True
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # incomplete last line (or b"")
        if len(self._partial) > self.MAX_LINE:
            lines.append(self._partial)
            self._partial = b""
        events: list[Event] = []
        for line in lines:
            self.line_no += 1
            if not line.strip():
                continue
            try:
                events.append(parse_line(line))
            except ProtocolError as err:
                self.skipped += 1
                if len(self.problems) < 5:
                    self.problems.append(f"line {self.line_no}: {err}")
        return events

    @property
    def problem(self) -> str | None:
        """One line about skipped lines, or None."""
        if not self.skipped:
            return None
        n = self.skipped
        return f"{self.path.name}: {n} unreadable line{'s' * (n != 1)} skipped ({self.problems[0]})"


def read_events(path: Path) -> list[Event]:
    return EventTail(path).poll()


# -- status.json -------------------------------------------------------------------------------------------------------


class RunStatus(BaseModel):
    """status.json, written by the engine alone (atomically)."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    state: Optional[Literal["created", "running", "finished", "stopped", "failed"]] = None
    pid: Optional[int] = None
    pid_started: Optional[float] = None
    """The engine process's start time (psutil ``create_time``): guards against a reused pid."""
    cmdline: Optional[list[str]] = None
    """The engine process's command line."""
    started: Optional[float] = None
    ended: Optional[float] = None
    updated: Optional[float] = None
    step: Optional[int] = None
    error: Optional[str] = None


class LaunchRecord(BaseModel):
    """launch.json, written by the launcher (app or ``--detach``) so a reader can attach before the engine writes."""

    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    pid: Optional[int] = None
    pid_started: Optional[float] = None
    cmdline: Optional[list[str]] = None
    launched: Optional[float] = None
    resume: bool = False


def parse_status(obj: Any) -> RunStatus:
    """Raises :class:`ProtocolError` naming what is wrong with a status.json's content."""
    if not isinstance(obj, dict):
        raise ProtocolError(f"status.json holds a {type(obj).__name__}, not an object")
    try:
        return RunStatus.model_validate(obj, strict=True)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "status"
        raise ProtocolError(f"status.json: {where}: {first.get('msg')}") from None


# -- the fold ----------------------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """Everything a view shows about a run, computed once by :class:`RunFold`."""

    name: str = ""
    path: Optional[Path] = None
    state: RunState = RunState.CREATED
    problem: Optional[str] = None
    """Why (part of) the run could not be read: skipped event lines, a broken status.json."""
    pid: Optional[int] = None
    lifecycle: Optional[str] = None
    """Kind of the newest started/resumed/finished/stopped/failed event."""
    model: str = ""
    method: str = ""
    task: str = ""
    device: str = ""
    precision: str = ""
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    train_examples: Optional[int] = None
    eval_examples: Optional[int] = None
    phase: str = ""
    step: int = 0
    max_steps: int = 0
    epoch: Optional[float] = None
    epochs: Optional[float] = None
    loss: Optional[float] = None
    """The newest logged training loss."""
    lr: Optional[float] = None
    grad_norm: Optional[float] = None
    tokens_per_s: Optional[float] = None
    elapsed: Optional[float] = None
    """Wall seconds over the whole run (every engine process's part), ticking while it runs."""
    eta: Optional[float] = None
    """Seconds left while it runs, else None."""
    eval_metrics: dict = field(default_factory=dict)
    """The newest evaluation's metrics (eval_loss, perplexity, accuracy, f1, ...)."""
    eval_step: Optional[int] = None
    best_eval_loss: Optional[float] = None
    best_eval_step: Optional[int] = None
    best_accuracy: Optional[float] = None
    final_eval: dict = field(default_factory=dict)
    """A finished run's final metrics (the last evaluation's when the engine did not evaluate again)."""
    train_loss: Optional[float] = None
    """Mean of the logged training losses of the steps that count (steps redone after a resume replace the old)."""
    memory: Optional[dict] = None
    checkpoint: Optional[str] = None
    adapter: Optional[str] = None
    failure: Optional[dict] = None
    """The failed event: error, message, hint, field."""
    world_size: int = 1
    distributed: str = ""
    """none | ddp | fsdp (the started event's; "" from an engine that did not say)."""
    gpus: list = field(default_factory=list)
    """The started event's cards: {index, name, memory_total}."""
    effective_batch: Optional[int] = None
    error: Optional[str] = None
    """One line for a failed run."""
    resumes: int = 0
    started: Optional[float] = None
    ended: Optional[float] = None
    events: int = 0
    skipped: int = 0

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    @property
    def eval_loss(self) -> Optional[float]:
        return self.eval_metrics.get("eval_loss")

    @property
    def accuracy(self) -> Optional[float]:
        return self.eval_metrics.get("accuracy")

    @property
    def perplexity(self) -> Optional[float]:
        return self.eval_metrics.get("perplexity")

    @property
    def last_loss(self) -> Optional[float]:  # the name the runs list used
        return self.loss

    @property
    def runtime_s(self) -> Optional[float]:
        return self.elapsed

    @property
    def state_style(self) -> str:
        return state_style(self.state)

    @property
    def progress_text(self) -> str:
        return f"{self.step}/{self.max_steps}" if self.max_steps else (str(self.step) if self.step else "-")

    @property
    def started_text(self) -> str:
        return datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M") if self.started else "-"

    @property
    def run(self):
        """The run folder (:class:`loratui.core.runs.RunDir`)."""
        from loratui.core.runs import RunDir

        return RunDir(self.path if self.path is not None else Path(self.name))

    def to_json(self) -> dict:
        return to_json_value({
            "name": self.name, "state": self.state.value, "model": self.model, "method": self.method,
            "step": self.step, "max_steps": self.max_steps, "progress": round(self.progress, 4),
            "elapsed_s": self.elapsed, "eta_s": self.eta, "tokens_per_s": self.tokens_per_s,
            "best_eval_loss": self.best_eval_loss, "eval": self.eval_metrics or None,
            "final_eval": self.final_eval or None, "train_loss": self.train_loss, "error": self.error,
            "problem": self.problem,
        })


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
        self._phase_from: float | None = None  # first phase event since the newest non-phase event
        self._terminal_time: float | None = None
        self._lifecycle_time: float | None = None
        # rate and ETA
        self._origin: tuple[float, int] | None = None
        self._step_time: float | None = None
        self._eta_at_step: float | None = None
        # train loss over the steps that count
        self._losses: list[tuple[int, float]] = []
        self._loss_sum = 0.0
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
        if ev.kind == "started" and self._seg_start is not None and self._seg_started:
            # a new engine process without a final event from the previous one (it crashed): close that part
            end = self._last_work if self._last_work is not None else self._seg_start
            self._closed += max(0.0, end - self._seg_start)
            self._seg_start = self._phase_from if self._phase_from is not None and self._phase_from >= end else t
            self._seg_last = t
        if self._seg_start is None:
            self._seg_start = self._seg_last = t
            self._seg_started = False
        self._seg_last = max(self._seg_last or t, t)
        if ev.kind == "phase":
            if self._phase_from is None:
                self._phase_from = t
        else:
            self._phase_from = None
            self._last_work = t
        if ev.kind == "started":
            self._seg_started = True
        if ev.kind in TERMINAL_KINDS:
            self._closed += max(0.0, self._seg_last - self._seg_start)
            self._seg_start = self._seg_last = self._last_work = self._phase_from = None
            self._seg_started = False
            self._terminal_time = t
            self.s.ended = t

    def _on_phase(self, ev: PhaseEvent) -> None:
        self.s.phase = ev.phase

    def _on_started(self, ev: StartedEvent) -> None:
        s = self.s
        for key in ("model", "method", "task", "device", "precision"):
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
        s.failure = s.error = None
        s.ended = None
        self._origin = None
        self._eta_at_step = None

    def _on_resumed(self, ev: ResumedEvent) -> None:
        s = self.s
        s.lifecycle = "resumed"
        s.resumes += 1
        s.failure = s.error = None
        if ev.step is not None:
            s.step = ev.step
            while self._losses and self._losses[-1][0] > ev.step:  # those steps are trained again
                self._loss_sum -= self._losses.pop()[1]
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
        if ev.loss is not None:
            s.loss = ev.loss
            while self._losses and self._losses[-1][0] >= ev.step:  # re-logged after a resume
                self._loss_sum -= self._losses.pop()[1]
            self._losses.append((ev.step, ev.loss))
            self._loss_sum += ev.loss
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

    def _on_finished(self, ev: FinishedEvent) -> None:
        s = self.s
        s.lifecycle = "finished"
        if ev.step is not None:
            s.step = max(s.step, ev.step)
        if ev.adapter:
            s.adapter = ev.adapter
        self._finished_train_loss = ev.train_loss
        extra = {k: v for k, v in (ev.__pydantic_extra__ or {}).items()
                 if k.startswith("eval_") and isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics = {k: v for k, v in (ev.eval or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _EVAL_SKIP}
        self._finished_eval = {**extra, **metrics,
                               **({"eval_loss": ev.eval_loss} if ev.eval_loss is not None else {})}

    def _on_stopped(self, ev: StoppedEvent) -> None:
        s = self.s
        s.lifecycle = "stopped"
        if ev.step is not None:  # the engine saved at this step, past the last logged one
            s.step = max(s.step, ev.step)
        if ev.adapter:
            s.adapter = ev.adapter
        if ev.checkpoint:
            s.checkpoint = ev.checkpoint

    def _on_failed(self, ev: FailedEvent) -> None:
        s = self.s
        s.lifecycle = "failed"
        s.failure = {k: getattr(ev, k) for k in ("error", "message", "hint", "field")}
        s.error = ev.message or ev.error or "failed"

    # -- output ----------------------------------------------------------------------------------------------------

    @property
    def terminal_time(self) -> float | None:
        """Time of the newest finished/stopped/failed event (None when the newest part has none)."""
        return self._terminal_time if self.s.lifecycle in TERMINAL_KINDS else None

    def summary(self, status: RunStatus | dict | None = None, *, live_pid: int | None = None,
                live_since: float | None = None, now: float | None = None, name: str | None = None,
                path: Path | None = None, problem: str | None = None, events_only: bool = False) -> RunSummary:
        """The run as of ``now`` (None: as of its newest event; no ticking).

        ``live_pid``/``live_since``: the run's engine process when one is proven alive, and its start time.
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
                               problem is not None and problem.startswith("status.json"))
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
        out.train_loss = (self._loss_sum / len(self._losses)) if self._losses else self._finished_train_loss
        if out.lifecycle == "finished":
            out.final_eval = {**s.eval_metrics, **self._finished_eval}
        return out

    def state(self, status: RunStatus | None = None, *, live_pid: int | None = None,
              live_since: float | None = None, broken: bool = False) -> RunState:
        """The newest truth wins: a live engine process newer than the last final event, else the events' own
        final event, else status.json; a part that started and whose process is gone crashed. A status.json that
        can't be read (``broken``) makes the run unreadable: the listing says why instead of guessing."""
        lifecycle = self.s.lifecycle
        if broken:
            return RunState.UNREADABLE  # status.json can't be trusted: say so (with the reason) rather than guess
        if live_pid is not None:
            ended = self.terminal_time
            if ended is None or live_since is None or live_since > ended:
                return RunState.RUNNING if lifecycle in ("started", "resumed") else RunState.STARTING
        if lifecycle in TERMINAL_KINDS:
            return RunState(lifecycle)
        st = status.state if status is not None else None
        if lifecycle in ("started", "resumed"):
            said = (status.updated or status.ended) if status is not None else None
            if st in TERMINAL_KINDS and (self._lifecycle_time is None or (said or 0) >= self._lifecycle_time):
                return RunState(st)  # the engine's last word is in status.json (its event line is still partial)
            return RunState.CRASHED
        if st == "running":
            return RunState.CRASHED  # launched (or announced) and gone before a word
        if st in TERMINAL_KINDS:
            return RunState(st)
        return RunState.CREATED


def fold(events: Iterable[Event | dict], status: RunStatus | dict | None = None, **kw: Any) -> RunSummary:
    """Fold a whole stream at once (see :meth:`RunFold.summary` for the keywords)."""
    return RunFold().add_all(events).summary(status, **kw)


# -- the contract, as documentation ------------------------------------------------------------------------------------

CONTRACT_BEGIN = "<!-- protocol:begin (generated by python -m loratui.core.protocol; do not edit) -->"
CONTRACT_END = "<!-- protocol:end -->"


def _fields_text(model: type[BaseModel], skip: tuple[str, ...] = ("kind", "time")) -> str:
    parts = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        ann = info.annotation
        optional = not info.is_required()
        base = ann
        args = getattr(ann, "__args__", ())
        if args and type(None) in args:
            base = next(a for a in args if a is not type(None))
        tname = getattr(base, "__name__", None) or str(base).replace("typing.", "")
        if str(base).startswith("typing.Literal"):
            tname = "|".join(str(a) for a in base.__args__)
        parts.append(f"{name}: {tname}{'?' if optional else ''}")
    return ", ".join(parts)


def contract_markdown() -> str:
    """The events and status files, as the models define them."""
    lines = [CONTRACT_BEGIN, "",
             "Every event is one JSON object a line with `kind` and `time`; extra fields are allowed and kept; "
             "non-finite numbers are written as `null`. `?` marks a field that may be null or absent.", ""]
    for t in EVENT_TYPES:
        kind = t.model_fields["kind"].default
        doc = " ".join((t.__doc__ or "").split())
        lines.append(f"- `{kind}`: {doc}")
        lines.append(f"  {{{_fields_text(t)}}}")
    lines += ["", f"- `status.json` (the engine alone writes it): {{{_fields_text(RunStatus, ())}}}",
              f"- `launch.json` (the launcher writes it): {{{_fields_text(LaunchRecord, ())}}}",
              f"- run states: {', '.join(s.value for s in RunState)}", "", CONTRACT_END]
    return "\n".join(lines)


def update_contract(path: Path) -> bool:
    """Rewrite the generated block of ``path``; True when it changed."""
    text = path.read_text()
    begin, end = text.index(CONTRACT_BEGIN), text.index(CONTRACT_END) + len(CONTRACT_END)
    new = text[:begin] + contract_markdown() + text[end:]
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":  # pragma: no cover
    doc = Path(__file__).resolve().parents[2] / "docs" / "CONTRACTS.md"
    print(("updated " if update_contract(doc) else "unchanged ") + str(doc))
