"""The run queue: runs that wait their turn, started one after another by a detached runner process.

```
runs/.queue/
  queue.json     the entries, in order (written atomically, under the lock)
  lock           flock(2) taken for every read-modify-write (app, CLI and runner all edit the queue)
  runner.json    pid of the runner process (only while it runs)
  runner.log     the runner's output
```

Queuing a run creates its run folder at once (config saved, no engine yet), so the Runs screen and ``loratui runs``
list it as ``waiting``, the word the queue uses. The runner is ``python -m loratui queue-runner RUNS_DIR`` in its
own session: it survives the app closing and the SSH session dropping, like an engine does. It starts the first
waiting entry with ``launch_detached``, waits for its run to end, starts the next, and exits when nothing waits.
With several GPUs (``gpus=["0", "1"]``) it runs one entry per GPU side by side. Its pass and its process are in
:mod:`loratui.core.queue_runner`. Light module: no torch, no Textual.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

from loratui.core.config import RunConfig
from loratui.core.fileio import atomic_write_text
from loratui.core.runs import RunDir, create_run, now, pid_alive, process_start_time, stop_run

QUEUE_DIR = ".queue"


def _state(value: Any) -> str:
    return str(getattr(value, "value", value))


#: a GPU counts as free for ``gpus=["auto"]`` while less than this share of its memory is used
FREE_GPU_USED = 0.1

#: entry states; waiting and running are live, the rest are final
LIVE = ("waiting", "running")
FINAL_RUN_STATES = ("finished", "stopped", "failed", "crashed")


def free_run_name(runs_dir: Path, name: str, taken: Collection[str] = ()) -> str:
    """``name``, or ``name-2``, ``name-3`` ...: the first that is neither a folder in ``runs_dir`` nor in ``taken``
    (the name a queued run gets; :meth:`RunQueue.planned_names` shows them before anything is made)."""
    out, i = name, 2
    while out in taken or (runs_dir / out).exists():
        out, i = f"{name}-{i}", i + 1
    return out


@dataclass
class Entry:
    id: str
    run: str
    state: str = "waiting"
    study: str | None = None
    label: str = ""
    added: float = 0.0
    started: float | None = None
    ended: float | None = None
    gpu: str | None = None
    cancel_requested: bool = False
    held_by: list[str] = field(default_factory=list)
    """a waiting entry: the runs outside the queue (live in this runs folder) whose cards it waits for"""

    @classmethod
    def from_dict(cls, d: dict) -> "Entry":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    @property
    def shown_state(self) -> str:
        """The state a person reads: 'stopping' for a running entry whose cancel was asked for."""
        return "stopping" if self.state == "running" and self.cancel_requested else self.state


def held_text(names: list[str], width: int | None = None) -> str:
    """Why a waiting entry waits: 'waiting: NAME is training (outside the queue)', NAME cut in the middle to fit
    ``width`` (its end, the date in a run's default name, tells it from the queued run's own)."""
    if not names:
        return ""
    rest = (f" and {len(names) - 1} more are" if len(names) > 1 else " is") + " training (outside the queue)"
    name = names[0]
    if width is not None:
        room = max(8, width - len("waiting: ") - len(rest))
        head = room // 3
        name = name if len(name) <= room else name[:head] + "…" + name[len(name) - (room - 1 - head):]
    return f"waiting: {name}{rest}"


@dataclass
class QueueState:
    entries: list[Entry] = field(default_factory=list)
    next_id: int = 1

    def find(self, entry_id: str) -> Entry | None:
        return next((e for e in self.entries if e.id == entry_id), None)

    @property
    def waiting(self) -> list[Entry]:
        return [e for e in self.entries if e.state == "waiting"]

    @property
    def running(self) -> list[Entry]:
        return [e for e in self.entries if e.state == "running"]


class RunQueue:
    """The queue of one runs folder."""

    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir).expanduser()
        self.dir = self.runs_dir / QUEUE_DIR

    # -- files ----------------------------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.dir / "queue.json"

    @property
    def runner_path(self) -> Path:
        return self.dir / "runner.json"

    @property
    def log_path(self) -> Path:
        return self.dir / "runner.log"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self) -> QueueState:
        """The queue as it is now (no lock: the file is replaced atomically)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return QueueState()
        return QueueState([Entry.from_dict(e) for e in data.get("entries", [])], int(data.get("next_id", 1)))

    def _write(self, state: QueueState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"entries": [asdict(e) for e in state.entries],
                                             "next_id": state.next_id}, indent=1))

    @contextlib.contextmanager
    def edit(self) -> Iterator[QueueState]:
        """Read, change and write the queue under the lock."""
        with self.locked():
            state = self.read()
            yield state
            self._write(state)

    # -- what the app and the CLI do ------------------------------------------------------------------------------
    def add(self, cfg: RunConfig, *, study: str | None = None, label: str = "",
            on_created: Callable[[RunDir], None] | None = None) -> Entry:
        """Create the run folder now (state waiting) and queue it; the name gets -2, -3 ... when taken."""
        cfg = cfg.model_copy(deep=True)
        cfg.output.runs_dir = str(self.runs_dir)
        if cfg.output.name:
            cfg.output.name = free_run_name(self.runs_dir, cfg.output.name)
        run = create_run(cfg, self.runs_dir)
        if on_created:
            on_created(run)
        with self.edit() as state:
            entry = Entry(id=f"q{state.next_id:04d}", run=run.name, study=study, label=label, added=round(now(), 3))
            state.next_id += 1
            state.entries.append(entry)
        return entry

    def add_study(self, study) -> list[Entry]:
        """Queue every run of a :class:`loratui.core.study.Study` (tagged, so Compare can find them)."""
        from loratui.core.study import write_study_tag

        batch = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = []
        for i, planned in enumerate(study.runs):
            out.append(self.add(planned.config, study=study.name, label=planned.label,
                                on_created=lambda run, p=planned, i=i: write_study_tag(
                                    run.path, study.name, batch, p.label, p.overrides, i)))
        return out

    def planned_names(self, study) -> list[str]:
        """The folder names :meth:`add_study` would give the study's runs now (``--dry-run`` shows them): each planned
        name, or its -2, -3 ... when the runs folder (or an earlier run of the study) already holds it."""
        names: list[str] = []
        for planned in study.runs:
            name = planned.config.output.name
            names.append(free_run_name(self.runs_dir, name, taken=names) if name else planned.name)
        return names

    def move(self, entry_id: str, delta: int) -> bool:
        """Move a waiting entry up (-1) or down (+1) among the waiting ones."""
        with self.edit() as state:
            waiting = state.waiting
            e = state.find(entry_id)
            if e is None or e.state != "waiting":
                return False
            i = waiting.index(e)
            j = i + delta
            if not 0 <= j < len(waiting):
                return False
            other = waiting[j]
            a, b = state.entries.index(e), state.entries.index(other)
            state.entries[a], state.entries[b] = other, e
            return True

    def cancel(self, entry_id: str) -> str:
        """A waiting entry is dropped (its untouched run folder removed); a running one is asked to stop."""
        with self.edit() as state:
            e = state.find(entry_id)
            if e is None:
                return "gone"
            if e.state == "waiting":
                e.state, e.ended = "cancelled", round(now(), 3)
                run = RunDir(self.runs_dir / e.run)
                if run.state() == "waiting" and not run.events_path.exists():
                    shutil.rmtree(run.path, ignore_errors=True)
                return "cancelled"
            if e.state == "running":
                e.cancel_requested = True
                stop_run(RunDir(self.runs_dir / e.run))
                return "stopping"
            return e.state

    def clear_done(self) -> int:
        """Forget entries that ended (their run folders stay)."""
        with self.edit() as state:
            before = len(state.entries)
            state.entries = [e for e in state.entries if e.state in LIVE]
            return before - len(state.entries)

    def forget_run(self, run: str) -> int:
        """Drop the ended entries of the run folder ``run`` (deleted): the Queue lists no run that is gone, and a
        run queued later under the same name is not mistaken for it. No queue file: nothing written."""
        if not self.path.exists():
            return 0
        with self.edit() as state:
            before = len(state.entries)
            state.entries = [e for e in state.entries if e.run != run or e.state in LIVE]
            return before - len(state.entries)

    # -- the runner -----------------------------------------------------------------------------------------------
    def runner_pid(self) -> int | None:
        try:
            info = json.loads(self.runner_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        pid = info.get("pid")
        return pid if pid_alive(pid, info.get("pid_started")) else None

    def ensure_runner(self, gpus: list[str] | None = None) -> int | None:
        """Start the detached runner unless one runs or nothing waits; returns its pid."""
        with self.locked():
            pid = self.runner_pid()
            if pid or not self.read().waiting:
                return pid
            cmd = [sys.executable, "-m", "loratui", "queue-runner", str(self.runs_dir)]
            if gpus:
                cmd += ["--gpus", ",".join(gpus)]
            log = open(self.log_path, "ab")
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, cwd=os.getcwd(),
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            log.close()
            atomic_write_text(self.runner_path, json.dumps({
                "pid": proc.pid, "pid_started": process_start_time(proc.pid), "started": round(now(), 3)}))
            return proc.pid

    def reconcile(self) -> QueueState:
        """The queue as it is now, when no runner keeps it: runs that ended since the runner died are recorded
        (a runner killed with SIGKILL would otherwise leave them 'running' forever)."""
        if self.runner_pid() is not None:
            return self.read()
        try:
            with self.edit() as state:
                self._update(state, lambda line: None)
        except OSError:  # a read-only runs folder: show it as it is
            pass
        return self.read()

    def _update(self, state: QueueState, echo: Callable[[str], None]) -> None:
        for e in state.running:
            run = RunDir(self.runs_dir / e.run)
            st = _state(run.state())
            if st in FINAL_RUN_STATES:
                e.state, e.ended = st, round(now(), 3)
                echo(f"{e.run}: {st}")

    def claim_runner(self) -> bool:
        """Record this process as the runner; False when another runner is alive."""
        with self.locked():
            pid = self.runner_pid()
            if pid and pid != os.getpid():
                return False
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.runner_path, json.dumps({"pid": os.getpid(),
                                                        "pid_started": process_start_time(os.getpid()),
                                                        "started": round(now(), 3)}))
            return True

    def release_runner(self) -> None:
        with self.locked():
            if self.runner_pid() == os.getpid():
                with contextlib.suppress(OSError):
                    self.runner_path.unlink()
