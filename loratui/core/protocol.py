"""The run protocol between the engine and every reader: typed events, run states, status and launch records.

- Events are pydantic models with ``kind`` as the discriminator (the models live in
  :mod:`loratui.core.events`; every name is re-exported here). Extra fields are kept (a later engine may add
  ``ranks``, ``gpus``, ``world_size``...), so old readers open new run folders and new readers old ones.
- :class:`EventWriter` (the engine) validates every event through its model and writes strict JSON: NaN and
  infinities become ``null``. :class:`EventTail` (every reader) parses lines through the models; a half-written
  last line waits for its end, and unknown or malformed lines (also binary garbage) are skipped and counted.
- :mod:`loratui.core.fold` folds a stream into the summary every view shows.
- ``docs/CONTRACTS.md`` holds :func:`contract_markdown`'s output between markers; a test fails when they drift
  (regenerate with ``python -m loratui.core.protocol``).

Light module (pydantic only): the app, the CLI and the engine all import it.
"""

from __future__ import annotations

import json
import math
import time
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from loratui.core.events import (  # noqa: F401 - re-exported: every reader imports them from here
    _ADAPTER, EVENT_KINDS, EVENT_TYPES, AlertEvent, AnyEvent, CheckpointEvent, EvalEvent, Event, FailedEvent,
    FinishedEvent, MemoryEvent, PhaseEvent, ResumedEvent, StartedEvent, StepEvent, StoppedEvent,
)
from loratui.core.preference import REWARD_DOCS

# -- run states ------------------------------------------------------------------------------------------------------


class RunState(str, Enum):
    """What a run is doing now, in the one word every view shows (Runs, the Monitor, the Queue, ``loratui runs``).
    ``waiting``: its folder is made and no engine has started it (a queued run waits its turn); ``starting``: its
    engine process lives but has not announced the run yet; ``stopping``: its engine lives and was asked to stop
    (``loratui stop``, x in the app, a cancel in the Queue): it ends its step and saves first; ``stalled``: its
    engine lives but has made no progress for far longer than its steps, evaluations and saves take (a hung
    collective, a stuck data loader, a frozen filesystem, a stopped process); it is ``running`` again as soon as
    events come."""

    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STALLED = "stalled"
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
        return self in ACTIVE_STATES

    @property
    def resumable(self) -> bool:
        return self in (RunState.STOPPED, RunState.CRASHED)


#: the states in which an engine process works on the run
ACTIVE_STATES = (RunState.STARTING, RunState.RUNNING, RunState.STOPPING, RunState.STALLED)

#: Rich styles of each state: the one place every view takes its colours from
STATE_STYLES: dict[str, str] = {
    RunState.WAITING: "dim", RunState.STARTING: "bold cyan", RunState.RUNNING: "bold green",
    RunState.STOPPING: "yellow", RunState.STALLED: "bold reverse yellow",
    RunState.FINISHED: "bold blue", RunState.STOPPED: "bold yellow", RunState.FAILED: "bold red",
    RunState.CRASHED: "bold red", RunState.UNREADABLE: "bold magenta",
}

#: the kinds that end an engine process's part of a run
TERMINAL_KINDS = ("finished", "stopped", "failed")
LIFECYCLE_KINDS = ("started", "resumed", *TERMINAL_KINDS)


def state_style(state: str | RunState | None) -> str:
    return STATE_STYLES.get(state or "", "bold")


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
    lines += ["", "A preference run's (`method.objective` dpo, orpo, kto) `step` and `eval` events also carry TRL's "
              "reward figures, numbers as TRL names them (in `eval` events without the `eval_` prefix, as every "
              "eval metric; a kto step may carry chosen and rejected alone): "
              + "; ".join(f"`{key}` ({label})" for key, label in REWARD_DOCS.items()) + "."]
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
