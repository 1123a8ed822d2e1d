"""The queue's runner: each pass records the runs that ended and starts what fits (one at a time, or one a GPU);
``runner_main`` is the detached process (``python -m loratui queue-runner RUNS_DIR``) that loops over it. Light
module: no torch, no Textual.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import psutil

from loratui.core.errors import RunError
from loratui.core.queue import FREE_GPU_USED, RunQueue
from loratui.core.runs import RunDir, launch_detached, now


def step(q: RunQueue, gpus: list[str] | None = None, echo: Callable[[str], None] = print,
         launch: Callable[..., int] = launch_detached,
         free_gpus: Callable[[], list[str]] | None = None) -> bool:
    """One pass of the runner: record ended runs, start what fits. False when nothing waits or runs.

    ``gpus``: None runs one at a time; ["0", "1"] one per listed GPU; ["auto"] one per GPU that is free now
    (less than a tenth of its memory used, by anyone) plus those its own runs hold, waiting while none is;
    without GPUs, one at a time. Live runs outside the queue (the app's, ``loratui train``'s, another session's)
    hold their cards as the queue's own do: the GPUs they run on when known, else every card; one at a time, any
    of them holds the one slot. A waiting entry that they hold back names them (``held_by``)."""
    with q.edit() as state:
        q._update(state, echo)
        busy = {e.gpu for e in state.running}
        outside = outside_runs(q.runs_dir, {e.run for e in state.running})
        held = set().union(*(o.gpus for o in outside if o.gpus is not None))
        everything = any(o.gpus is None for o in outside)
        if gpus == ["auto"]:
            found = (free_gpus or free_gpu_indices)()
            if found is None:  # no GPU at all: one run at a time
                slots: list[str | None] = [None]
            else:  # the free GPUs, and those our own runs hold; none free: wait
                slots = list(dict.fromkeys([*found, *(g for g in busy if g is not None)]))
        else:
            slots = list(gpus) if gpus else [None]
        # a slot outside runs hold: a card one of them uses (or may: GPUs not known yet), or the one slot for any
        taken = {g for g in slots if g not in busy and outside and (g is None or everything or g in held)}
        for e in state.waiting:
            free = [g for g in slots if g not in busy and g not in taken]
            if not free:  # it waits; outside runs are named when a card they hold (or none free) keeps it waiting
                holding = taken or (gpus == ["auto"] and len(busy - {None}) == 0)
                e.held_by = [o.name for o in outside] if holding else []
                continue
            e.held_by = []
            gpu = free[0]
            run = RunDir(q.runs_dir / e.run)
            if not run.config_path.is_file():
                e.state, e.ended = "failed", round(now(), 3)
                echo(f"{e.run}: its run folder is gone")
                continue
            env = {"CUDA_VISIBLE_DEVICES": gpu} if gpu is not None else None
            kwargs: dict[str, Any] = {"env": env}
            if gpu is not None and "processes" in inspect.signature(launch).parameters:
                kwargs["processes"] = 1  # pinned to one card: one process, whatever the config's plan says
            try:
                pid = launch(run, **kwargs)
            except (OSError, RunError) as err:
                e.state, e.ended = "failed", round(now(), 3)
                echo(f"{e.run}: could not start: {err}")
                continue
            e.state, e.started, e.gpu = "running", round(now(), 3), gpu
            busy.add(gpu)
            where = f" on GPU {gpu}" if gpu is not None else ""
            echo(f"{e.run}: started (pid {pid}){where}")
        alive = bool(state.running or state.waiting)
        if not alive and q.runner_path.exists() and q.runner_pid() in (None, os.getpid()):
            with contextlib.suppress(OSError):
                q.runner_path.unlink()
        return alive


def run_forever(q: RunQueue, gpus: list[str] | None = None, echo: Callable[[str], None] = print, poll: float = 1.0,
                should_stop: Callable[[], bool] = lambda: False) -> None:
    """The runner loop: until nothing waits or runs (or ``should_stop``)."""
    while not should_stop():
        if not step(q, gpus, echo):
            return
        time.sleep(poll)


@dataclass
class Outside:
    """A live run in the runs folder that the queue did not start (or no longer counts as its own)."""

    name: str
    gpus: frozenset[str] | None
    """the physical GPU indices it runs on; None: not known (yet), so it holds every card"""


def outside_runs(runs_dir: Path, own: set[str]) -> list[Outside]:
    """The runs under ``runs_dir``, not named in ``own``, whose engine is proven alive (see
    :meth:`RunDir.engine_process`: the app's, ``loratui train``'s, ``--detach``'s, another session's), oldest first.
    Only the folders :meth:`RunDir.may_be_live` keeps (as :func:`loratui.core.runs.live_runs` does) are looked at
    closer: a run that ended after its last launch costs a file read and two stats a pass."""
    out = []
    try:
        folders = sorted(p for p in Path(runs_dir).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    for path in folders:
        run = RunDir(path)
        if run.name in own or not run.may_be_live():
            continue
        proc = run.engine_process()
        if proc is None:
            continue
        try:
            since = proc.create_time()
        except psutil.Error:
            continue
        out.append((since, Outside(run.name, _run_gpus(run, proc.pid, since))))
    return [o for _, o in sorted(out, key=lambda x: x[0])]


_GPUS: dict[tuple[str, int], frozenset[str]] = {}
"""(run folder, engine pid) -> its cards, once its started event said them (they don't change while it lives)"""


def _run_gpus(run: RunDir, pid: int, since: float) -> frozenset[str] | None:
    """The cards a live engine uses: its own started event's ``gpus`` (written after ``since``, when the process
    began), else the config's ``train.gpus`` when it lists cards; None when neither says."""
    key = (str(run.path), pid)
    if key in _GPUS:
        return _GPUS[key]
    try:
        lines = run.events_path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if '"gpus"' not in line:
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("kind") != "started" or not isinstance(ev.get("gpus"), list):
            continue
        if (ev.get("time") or 0) < since - 1:
            break  # an earlier engine's: this one has not said yet
        found = frozenset(str(g["index"]) for g in ev["gpus"] if isinstance(g, dict) and g.get("index") is not None)
        _GPUS[key] = found
        return found
    try:
        listed = run.config().train.gpus
    except Exception:  # noqa: BLE001 - an unreadable config says nothing about cards
        return None
    return frozenset(str(i) for i in listed) if isinstance(listed, list) else None


def free_gpu_indices() -> list[str] | None:
    """CUDA indices of the GPUs that are free now; None without NVML or GPUs."""
    from loratui.core.gpu import query_gpus

    gpus = query_gpus()
    if not gpus:
        return None
    out = []
    for g in gpus:
        frac = g.memory_fraction
        if g.cuda_index is not None and frac is not None and frac < FREE_GPU_USED:
            out.append(str(g.cuda_index))
    return out


def default_gpus() -> list[str] | None:
    """What the app starts the runner with: one run per free GPU on a box with several, else one at a time."""
    from loratui.core.gpu import query_gpus

    return ["auto"] if len(query_gpus()) > 1 else None


def runner_main(runs_dir: str, gpus: list[str] | None = None, poll: float = 1.0) -> int:
    """Entry of the detached runner process (``python -m loratui queue-runner RUNS_DIR``)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # survive a dropped SSH session
    stop = {"now": False}

    def on_term(signum, frame):  # the runner stops; runs already started keep going
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_term)
    q = RunQueue(runs_dir)
    if not q.claim_runner():
        print(f"another queue runner (pid {q.runner_pid()}) serves {q.runs_dir}", flush=True)
        return 0

    def echo(line: str) -> None:
        print(f"{datetime.now().strftime('%H:%M:%S')} {line}", flush=True)

    echo(f"queue runner for {q.runs_dir}" + (f" on GPUs {', '.join(gpus)}" if gpus else ""))
    try:
        run_forever(q, gpus, echo, poll, should_stop=lambda: stop["now"])
    finally:
        q.release_runner()
    echo("queue empty: runner exits")
    return 0
