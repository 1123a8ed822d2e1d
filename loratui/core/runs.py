"""Run directories: the single source of truth for a run.

```
runs/<name>/
  config.yaml     resolved config the run used
  events.jsonl    append-only, one JSON object a line, flushed per event (loratui.core.protocol)
  engine.log      the engine's stdout/stderr
  status.json     pid, state, timestamps: written by the engine alone, atomically
  launch.json     what the launcher started (pid, start time, command): lets a reader attach at once
  checkpoints/    Trainer checkpoints
  adapter/        final adapter (or model, for full fine-tuning)
```

Light module (no torch, no textual): both the app and the engine use it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import psutil

from loratui.core.config import RunConfig, load_config
from loratui.core.errors import RunError
from loratui.core.fileio import atomic_write_json
from loratui.core.fold import RunFold, RunSummary  # noqa: F401 - re-exported
from loratui.core.fold_state import START_TIME_SLACK
from loratui.core.identity import (  # noqa: F401 - re-exported: a run's engine, proven, lives in loratui.core.identity
    RunBusy, RunLock, engine_process, names_run, pid_alive, process_identity, process_start_time,
)
from loratui.core.run_control import (  # noqa: F401 - re-exported: starting and signalling engines live there
    engine_command, launch_detached, request_checkpoint, stop_run, wait_for_state,
)
from loratui.core.protocol import (  # noqa: F401 - re-exported: the run protocol lives in loratui.core.protocol
    TERMINAL_KINDS, Event, EventTail, EventWriter, LaunchRecord, ProtocolError, RunState, RunStatus, parse_status,
    to_json_value,
)

STATES = tuple(s.value for s in RunState)
TERMINAL_EVENTS = TERMINAL_KINDS


def now() -> float:
    return time.time()


# -- run folders -----------------------------------------------------------------------------------------------------


def check_run_name(name: Any, field: str = "output.name") -> str:
    """A run name is one path component: no separators, not absolute, not '.' or '..'."""
    text = str(name)
    if not text.isprintable():
        from loratui.core.fmt import printable

        raise RunError(f"'{printable(text, 80)}' is not a run name: names are printable and on one line (no control "
                       "characters or escape sequences)", field=field, hint="e.g. my-run-1")
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text
            or os.path.isabs(text) or len(text) > 255):
        raise RunError(f"{text[:80]!r} is not a run name: names are a single path component inside the runs "
                       "folder (no '/', not '..')", field=field, hint="e.g. my-run-1")
    return text


@dataclass
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    # paths
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "engine.log"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def launch_path(self) -> Path:
        return self.path / "launch.json"

    @property
    def stop_path(self) -> Path:
        """stop.json: which engine process was asked to stop (by :func:`stop_run`); that engine reads 'stopping'."""
        return self.path / "stop.json"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    def exists(self) -> bool:
        return self.config_path.is_file() or self.events_path.is_file() or self.status_path.is_file()

    def config(self) -> RunConfig:
        return load_config(self.config_path)

    # status.json (the engine's) and launch.json (the launcher's)
    def read_status(self) -> dict:
        """status.json as a dict; {} when it is missing or not a JSON object."""
        try:
            data = json.loads(self.status_path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    def load_status(self) -> tuple[RunStatus | None, str | None]:
        """The validated status and, when it can't be read, why (None, reason). A missing file is (None, None)."""
        try:
            raw = self.status_path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as err:
            return None, f"status.json: {err.strerror or err}"
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            return None, "status.json is not JSON"
        try:
            return parse_status(data), None
        except ProtocolError as err:
            return None, str(err)

    def write_status(self, **changes: Any) -> dict:
        """Update status.json atomically (the engine is its one writer)."""
        status = self.read_status()
        status.update(changes)
        status["updated"] = round(now(), 3)
        status = to_json_value(status)
        atomic_write_json(self.status_path, status)
        return status

    def read_launch(self) -> LaunchRecord | None:
        try:
            return LaunchRecord.model_validate(json.loads(self.launch_path.read_bytes()))
        except Exception:  # noqa: BLE001 - missing or unreadable: nothing was launched that we can prove
            return None

    def engine_process(self) -> psutil.Process | None:
        """This run's engine process when one is proven alive: the one status.json names while it says running,
        or the one launch.json names when it was launched after status.json was last written."""
        status, _ = self.load_status()
        if status is not None and status.state == "running":
            proc = engine_process(self.path, status.pid, status.pid_started)
            if proc is not None:
                return proc
        launch = self.read_launch()
        if launch is not None and launch.pid is not None:
            newer = status is None or status.updated is None or (launch.launched or 0) >= status.updated
            if newer:
                return engine_process(self.path, launch.pid, launch.pid_started)
        return None

    def stop_asked(self, pid: int, started: float | None) -> bool:
        """Whether the engine process ``pid`` (started at ``started``) is the one stop.json says was asked to stop
        (a resume's engine is another process: it runs until it is asked)."""
        try:
            asked = json.loads(self.stop_path.read_bytes())
            return asked["pid"] == pid and abs(float(asked["pid_started"]) - float(started)) <= START_TIME_SLACK
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def may_be_live(self) -> bool:
        """Whether :meth:`engine_process` could find an engine here, from file times alone (no process looked at,
        launch.json not parsed): status.json says running, or launch.json is not older than status.json (or there is
        no status.json): a launch whose engine has not written yet, a resume's first seconds. A run that ended after
        its last launch (its final status written after launch.json) is passed over: walks of the runs folder for
        live engines (:func:`live_runs`, the queue's runs outside it) look closer only at these."""
        if self.read_status().get("state") == "running":
            return True
        try:
            launched = self.launch_path.stat().st_mtime_ns
        except OSError:
            return False  # never launched by a launcher, and its engine does not say it runs
        try:
            return launched >= self.status_path.stat().st_mtime_ns  # both times from one filesystem's clock
        except OSError:
            return True

    def state(self) -> RunState:
        """waiting | starting | running | stopping | stalled | finished | stopped | failed | crashed | unreadable (see
        :meth:`loratui.core.fold.RunFold.state`)."""
        return summarize(self, now=now()).state

    def events(self) -> list[Event]:
        return EventTail(self.events_path).poll()

    def latest_checkpoint(self) -> Path | None:
        """The newest *complete* checkpoint (see core/checkpoints.py); partial ones are passed over."""
        from loratui.core.checkpoints import latest_complete

        return latest_complete(self.checkpoints_dir)[0]

    def log_tail(self, lines: int = 50) -> list[str]:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                text = fh.read().decode("utf-8", "replace")
        except OSError:
            return []
        # tqdm-style carriage returns: keep the last segment of each line
        out = [ln.rsplit("\r", 1)[-1] for ln in text.splitlines()]
        return [ln for ln in out if ln.strip()][-lines:]


class RunReader:
    """Follows one run folder: reads only new event lines on each call, folds them once, and answers a fresh
    :class:`RunSummary` (state re-checked, elapsed and ETA ticking). The Runs screen keeps one per run.

    Not thread-safe: its owner serializes the calls (two polls at once would fold the same lines twice)."""

    def __init__(self, run: RunDir):
        self.run = run
        self.tail = EventTail(run.events_path)
        self.fold = RunFold()

    def poll(self) -> list[Event]:
        batch = self.tail.poll()
        if self.tail.reset:
            self.fold = RunFold()
        self.fold.add_all(batch)
        return batch

    def summary(self, now: float | None = None) -> RunSummary:
        return summarize(self.run, self.fold, now=now, tail=self.tail)


def summarize(run: RunDir, fold: RunFold | None = None, *, now: float | None = None,
              tail: EventTail | None = None) -> RunSummary:
    """The run's summary: its events folded (``fold``, or the whole file read now) with status.json, launch.json
    and whether its engine process is alive. Never raises for a broken run: it comes back ``unreadable``."""
    try:
        if fold is None:
            tail = EventTail(run.events_path)
            fold = RunFold().add_all(tail.poll())
        status, status_problem = run.load_status()
        proc = run.engine_process() if status_problem is None else None
        problem = status_problem or (tail.problem if tail is not None else None)
        live_since = None
        if proc is not None:
            try:
                live_since = proc.create_time()
            except psutil.Error:
                proc = None
        s = fold.summary(status, live_pid=proc.pid if proc is not None else None, live_since=live_since, now=now,
                         name=run.name, path=run.path, problem=problem,
                         stop_asked=proc is not None and run.stop_asked(proc.pid, live_since))
        if status_problem is not None:
            s.state = RunState.UNREADABLE
        elif proc is None and status is None and s.state == RunState.WAITING:
            s.state = _gone_before_a_word(run, s.state)
        if tail is not None:
            s.skipped = tail.skipped
        if not s.model or not s.method:  # no started event yet: what the config says (read once, not every poll)
            try:
                cfg = run.config()
                s.model = s.model or cfg.model.name
                s.method = s.method or cfg.method.kind
                s.objective = s.objective or cfg.method.objective
                s.task = s.task or cfg.model.task
            except Exception:  # noqa: BLE001 - a run without a readable config still lists
                pass
        if s.started is None:
            try:
                s.started = run.config_path.stat().st_mtime
            except OSError:
                pass
        return s
    except Exception as err:  # noqa: BLE001 - one broken run never breaks a listing
        return RunSummary(name=run.name, path=run.path, state=RunState.UNREADABLE,
                          problem=f"{type(err).__name__}: {err}".splitlines()[0][:200])


def _gone_before_a_word(run: RunDir, state: RunState) -> RunState:
    """A run launched (launch.json) whose engine is gone without a status or an event: stopped, when the stop was
    asked of that engine (x while it was starting: it read 'waiting' forever, QA walk), else crashed (its log says
    why); a run never launched still waits (a queued one)."""
    launch = run.read_launch()
    if launch is None or not launch.pid:
        return state
    return RunState.STOPPED if run.stop_asked(launch.pid, launch.pid_started) else RunState.CRASHED


def list_runs(runs_dir: str | Path) -> list[RunSummary]:
    """Every run under ``runs_dir``, newest first; an unreadable run is listed as such with the reason."""
    return _summaries(runs_dir, RunDir.exists)


def live_runs(runs_dir: str | Path) -> list[RunSummary]:
    """The runs under ``runs_dir`` whose engine is alive now (starting, running or stalled), newest first. Only the
    runs that :meth:`RunDir.may_be_live` keeps are folded, so a folder of many finished runs costs a file read each."""
    return [s for s in _summaries(runs_dir, RunDir.may_be_live) if s.state.active]


def _summaries(runs_dir: str | Path, wanted) -> list[RunSummary]:
    """The summaries of the run folders under ``runs_dir`` that ``wanted(RunDir)`` keeps, newest first."""
    try:
        runs = [RunDir(p) for p in Path(runs_dir).iterdir() if p.is_dir()]
    except OSError:
        return []
    out = [summarize(run, now=now()) for run in runs if wanted(run)]
    out.sort(key=lambda s: (s.started or 0, s.name), reverse=True)
    return out


def slug(text: str) -> str:
    text = text.rstrip("/").split("/")[-1]
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-").lower() or "run"


def new_run_name(cfg: RunConfig) -> str:
    return f"{slug(cfg.model.name)}-{cfg.method.kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def create_run(cfg: RunConfig, runs_dir: str | Path | None = None) -> RunDir:
    """Make a fresh run folder holding the resolved config. Never touches an existing run."""
    runs_dir = Path(runs_dir or cfg.output.runs_dir).expanduser()
    name = check_run_name(cfg.output.name) if cfg.output.name else new_run_name(cfg)
    run = RunDir(runs_dir / name)
    if run.path.resolve().parent != runs_dir.resolve():
        raise RunError(f"{name!r} would be outside the runs folder {runs_dir}", field="output.name",
                       hint="names are a single path component")
    if run.exists():
        state = run.state()  # only a run that stopped before its end can be resumed
        hint = (f"{name} is training now: choose another output.name" if state.active else
                f"{name} finished: choose another output.name" if state == "finished" else
                "choose another output.name, or resume it with: loratui train --resume " + str(run.path))
        raise RunError(f"{run.path} already holds a run", field="output.name", hint=hint)
    if run.path.exists() and any(run.path.iterdir()):
        raise RunError(f"{run.path} exists and is not empty", field="output.name", hint="choose another output.name")
    cfg = cfg.model_copy(deep=True)
    cfg.output.runs_dir = str(runs_dir.resolve())
    cfg.output.name = name
    made = not run.path.exists()
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        cfg.save(run.config_path, full=True)
    except OSError as err:
        if made:
            shutil.rmtree(run.path, ignore_errors=True)  # nothing half-made is left behind
        raise RunError(f"cannot write the run folder {run.path}: {err.strerror or err}", field="output.runs_dir",
                       hint="the runs folder must be writable: check its permissions or mount, or use --runs-dir "
                            "(or $LORATUI_RUNS_DIR) for another folder") from None
    return run


def last_lifecycle(events: list) -> str | None:
    """The kind of the newest started/resumed/finished/stopped/failed event (a resumed run can stop twice)."""
    for ev in reversed(events):
        if ev.get("kind") in ("started", "resumed", *TERMINAL_EVENTS):
            return ev["kind"]
    return None


def iter_events_following(run: RunDir, poll: float = 0.25, should_stop=lambda: False) -> Iterator[Event]:
    """All events from the start, then new ones as they are written, until a terminal event or the process dies."""
    tail = EventTail(run.events_path)
    while not should_stop():
        batch = tail.poll()
        yield from batch
        if last_lifecycle(batch) in TERMINAL_EVENTS:
            return
        if not batch and not run.state().active:
            yield from tail.poll()
            return
        if not batch:
            time.sleep(poll)
