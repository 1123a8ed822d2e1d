"""Run directories: the single source of truth for a run.

```
runs/<name>/
  config.yaml     resolved config the run used
  events.jsonl    append-only, one JSON object a line, flushed per event
  engine.log      the engine's stdout/stderr
  status.json     pid, state, timestamps (written atomically)
  checkpoints/    Trainer checkpoints
  adapter/        final adapter (or model, for full fine-tuning)
```

Light module (no torch, no textual): both the app and the engine use it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from loratui.core.config import RunConfig, load_config
from loratui.core.errors import RunError

STATES = ("created", "running", "finished", "stopped", "failed", "crashed")
TERMINAL_EVENTS = ("finished", "stopped", "failed")


def now() -> float:
    return time.time()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def pid_alive(pid: int | None, started: float | None = None) -> bool:
    """True if ``pid`` runs and (when known) was started around ``started`` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
    except OSError:
        pass
    if started:
        try:
            import psutil

            if abs(psutil.Process(pid).create_time() - started) > 120:
                return False
        except Exception:
            pass
    return True


class EventWriter:
    """Appends events, one JSON line each, flushed per event."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", buffering=1)

    def emit(self, kind: str, **data: Any) -> dict:
        event = {"kind": kind, "time": round(now(), 3), **data}
        self._fh.write(json.dumps(event, default=_json_default) + "\n")
        self._fh.flush()
        return event

    def close(self) -> None:
        self._fh.close()


def _json_default(obj: Any) -> Any:
    try:
        return float(obj)
    except Exception:
        return str(obj)


class EventTail:
    """Reads new complete events from an events file; tolerates a half-written last line."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self._partial = b""

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except FileNotFoundError:
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # incomplete last line (or b"")
        events = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


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
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        return self.path / "adapter"

    def exists(self) -> bool:
        return self.config_path.is_file() or self.events_path.is_file() or self.status_path.is_file()

    def config(self) -> RunConfig:
        return load_config(self.config_path)

    # status
    def read_status(self) -> dict:
        try:
            return json.loads(self.status_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def write_status(self, **changes: Any) -> dict:
        status = self.read_status()
        status.update(changes)
        status["updated"] = round(now(), 3)
        _atomic_write(self.status_path, json.dumps(status, indent=1))
        return status

    def state(self) -> str:
        """running | finished | stopped | failed | crashed | created; crashed = running but its process is gone."""
        status = self.read_status()
        state = status.get("state", "created")
        if state == "running" and not pid_alive(status.get("pid"), status.get("pid_started")):
            return "crashed"
        return state

    def events(self) -> list[dict]:
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


@dataclass
class RunSummary:
    """What the runs list shows for one run; built from status.json and the events file."""

    run: RunDir
    state: str
    model: str = ""
    method: str = ""
    task: str = ""
    step: int = 0
    max_steps: int = 0
    epoch: float = 0.0
    best_eval_loss: float | None = None
    last_loss: float | None = None
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def progress(self) -> float:
        return (self.step / self.max_steps) if self.max_steps else 0.0

    @property
    def started_text(self) -> str:
        return datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M") if self.started else "-"


def summarize(run: RunDir, events: list[dict] | None = None) -> RunSummary:
    events = run.events() if events is None else events
    status = run.read_status()
    s = RunSummary(run=run, state=run.state(), started=status.get("started"), ended=status.get("ended"))
    for ev in events:
        kind = ev.get("kind")
        if kind == "started":
            s.model = ev.get("model", s.model)
            s.method = ev.get("method", s.method)
            s.task = ev.get("task", s.task)
            s.max_steps = ev.get("max_steps", s.max_steps) or s.max_steps
            s.started = s.started or ev.get("time")
        elif kind == "step":
            s.step = max(s.step, int(ev.get("step", 0)))
            s.epoch = ev.get("epoch", s.epoch) or s.epoch
            if ev.get("loss") is not None:
                s.last_loss = ev["loss"]
        elif kind == "eval":
            loss = ev.get("eval_loss")
            if loss is not None and (s.best_eval_loss is None or loss < s.best_eval_loss):
                s.best_eval_loss = loss
        elif kind == "failed":
            s.error = ev.get("message")
        elif kind == "finished":
            s.step = max(s.step, int(ev.get("step", s.step) or s.step))
    if not s.model or not s.method:
        try:
            cfg = run.config()
            s.model = s.model or cfg.model.name
            s.method = s.method or cfg.method.kind
            s.task = s.task or cfg.model.task
        except Exception:
            pass
    return s


def list_runs(runs_dir: str | Path) -> list[RunSummary]:
    """Every run under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    out = []
    for p in runs_dir.iterdir():
        run = RunDir(p)
        if p.is_dir() and run.exists():
            out.append(summarize(run))
    out.sort(key=lambda s: s.started or 0, reverse=True)
    return out


def slug(text: str) -> str:
    text = text.rstrip("/").split("/")[-1]
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-").lower() or "run"


def new_run_name(cfg: RunConfig) -> str:
    return f"{slug(cfg.model.name)}-{cfg.method.kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def create_run(cfg: RunConfig, runs_dir: str | Path | None = None) -> RunDir:
    """Make a fresh run folder holding the resolved config. Never touches an existing run."""
    runs_dir = Path(runs_dir or cfg.output.runs_dir).expanduser()
    name = cfg.output.name or new_run_name(cfg)
    run = RunDir(runs_dir / name)
    if run.exists():
        raise RunError(f"{run.path} already holds a run", field="output.name",
                       hint="choose another output.name, or resume it with: loratui train --resume " + str(run.path))
    if run.path.exists() and any(run.path.iterdir()):
        raise RunError(f"{run.path} exists and is not empty", field="output.name", hint="choose another output.name")
    run.path.mkdir(parents=True, exist_ok=True)
    cfg = cfg.model_copy(deep=True)
    cfg.output.runs_dir = str(runs_dir.resolve())
    cfg.output.name = name
    cfg.save(run.config_path, full=True)
    run.write_status(state="created", created=round(now(), 3))
    return run


def engine_command(run: RunDir, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "loratui", "engine", str(run.path)]
    if resume:
        cmd.append("--resume")
    return cmd


def launch_detached(run: RunDir, *, resume: bool = False, env: dict | None = None) -> int:
    """Start the engine for ``run`` as its own process in its own session (survives the app and SSH hangups)."""
    log = open(run.log_path, "ab")
    proc = subprocess.Popen(
        engine_command(run, resume),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        cwd=os.getcwd(),
    )
    log.close()
    # status.json is written by the engine itself; record the pid now so the app can attach at once
    run.write_status(state="running", pid=proc.pid, pid_started=process_start_time(proc.pid),
                     launched=round(now(), 3))
    return proc.pid


def process_start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _signal_run(run: RunDir, sig: int) -> bool:
    status = run.read_status()
    pid = status.get("pid")
    if status.get("state") != "running" or not pid_alive(pid, status.get("pid_started")):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def stop_run(run: RunDir) -> bool:
    """Ask a running engine to stop gracefully: it saves the adapter and a checkpoint, then writes 'stopped'."""
    return _signal_run(run, signal.SIGTERM)


def request_checkpoint(run: RunDir) -> bool:
    """Ask a running engine to save a checkpoint at the end of the current step."""
    return _signal_run(run, signal.SIGUSR1)


def wait_for_state(run: RunDir, states: tuple[str, ...] = ("finished", "stopped", "failed", "crashed"),
                   timeout: float = 600.0, poll: float = 0.2) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = run.state()
        if st in states:
            return st
        time.sleep(poll)
    raise TimeoutError(f"run {run.name} still {run.state()} after {timeout:.0f}s")


def last_lifecycle(events: list[dict]) -> str | None:
    """The kind of the newest started/resumed/finished/stopped/failed event (a resumed run can stop twice)."""
    for ev in reversed(events):
        if ev.get("kind") in ("started", "resumed", *TERMINAL_EVENTS):
            return ev["kind"]
    return None


def iter_events_following(run: RunDir, poll: float = 0.25, should_stop=lambda: False) -> Iterator[dict]:
    """All events from the start, then new ones as they are written, until a terminal event or the process dies."""
    tail = EventTail(run.events_path)
    while not should_stop():
        batch = tail.poll()
        yield from batch
        if last_lifecycle(batch) in TERMINAL_EVENTS:
            return
        if not batch and run.state() not in ("running", "created"):
            yield from tail.poll()
            return
        if not batch:
            time.sleep(poll)
