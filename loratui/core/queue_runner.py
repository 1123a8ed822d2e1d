"""The queue's runner: each pass records the runs that ended and starts what fits (one at a time, or one a GPU);
``runner_main`` is the detached process (``python -m loratui queue-runner RUNS_DIR``) that loops over it. Light
module: no torch, no Textual.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
from datetime import datetime
from typing import Any, Callable

from loratui.core.errors import RunError
from loratui.core.queue import FREE_GPU_USED, RunQueue
from loratui.core.runs import RunDir, launch_detached, now


def step(q: RunQueue, gpus: list[str] | None = None, echo: Callable[[str], None] = print,
         launch: Callable[..., int] = launch_detached,
         free_gpus: Callable[[], list[str]] | None = None) -> bool:
    """One pass of the runner: record ended runs, start what fits. False when nothing waits or runs.

    ``gpus``: None runs one at a time; ["0", "1"] one per listed GPU; ["auto"] one per GPU that is free now
    (less than a tenth of its memory used, by anyone) plus those its own runs hold, waiting while none is;
    without GPUs, one at a time."""
    with q.edit() as state:
        q._update(state, echo)
        busy = {e.gpu for e in state.running}
        if gpus == ["auto"]:
            found = (free_gpus or free_gpu_indices)()
            if found is None:  # no GPU at all: one run at a time
                slots: list[str | None] = [None]
            else:  # the free GPUs, and those our own runs hold; none free: wait
                slots = list(dict.fromkeys([*found, *(g for g in busy if g is not None)]))
        else:
            slots = list(gpus) if gpus else [None]
        for e in state.waiting:
            free = [g for g in slots if g not in busy]
            if not free:
                break
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
        q.run_forever(gpus, echo, poll, should_stop=lambda: stop["now"])
    finally:
        q.release_runner()
    echo("queue empty: runner exits")
    return 0
