"""Starting a run's engine (its own process and session, on the cards its config chose) and signalling it: stop,
checkpoint now, wait for a state. Light module (no torch, no textual); ``loratui.core.runs`` re-exports every name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import psutil

from loratui.core.errors import RunError
from loratui.core.fileio import atomic_write_json
from loratui.core.identity import RunLock, process_identity
from loratui.core.protocol import to_json_value

if TYPE_CHECKING:
    from loratui.core.runs import RunDir


def engine_command(run: RunDir, resume: bool = False, processes: int = 1) -> list[str]:
    """The engine for ``run``; with several processes, the supervisor that starts them under torchrun."""
    cmd = [sys.executable, "-m", "loratui", "engine", str(run.path)]
    if resume:
        cmd.append("--resume")
    if processes > 1:
        cmd += ["--nproc", str(processes)]
    return cmd


def launch_detached(run: RunDir, *, resume: bool = False, env: dict | None = None,
                    processes: int | None = None, lock: RunLock | None = None) -> int:
    """Start the engine for ``run`` as its own process in its own session (survives the app and SSH hangups), on
    exactly the cards its config chose (one process a card under torchrun when there are several).

    The run's lock is taken first (or ``lock``, already held, is used) and handed to the engine, so a second launch
    of the same run says :class:`RunBusy` and touches nothing. status.json stays the engine's: what was launched goes
    to launch.json, so a reader attaches at once."""
    from loratui.core.devices import plan_devices

    from loratui.core.gpu import query_gpus

    lock = lock or RunLock.acquire(run.path)
    try:
        launched = round(time.time(), 3)
        pinned = (env or {}).get("CUDA_VISIBLE_DEVICES")
        # a caller that pins cards (the queue: one run a free card) plans among those cards only
        cards = None if pinned is None else [g for g in query_gpus(visible_only=False)
                                             if str(g.index) in pinned.split(",")]
        plan = plan_devices(run.config(), cards)
        env = {**plan.env(), **(env or {})}
        cmd = engine_command(run, resume, processes if processes is not None else plan.processes)
        lock_env, lock_fds = lock.hand_over()
        try:
            log = open(run.log_path, "ab")
        except OSError as err:
            raise RunError(f"cannot write {run.log_path}: {err.strerror or err}", field="run",
                           hint="the runs folder must be writable") from None
        with log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=lock_fds,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), **lock_env},
                cwd=os.getcwd(),
            )
        lock.record(proc.pid)
        ident = process_identity(proc.pid)
        try:
            atomic_write_json(run.launch_path, to_json_value({
                "pid": proc.pid, "pid_started": ident["pid_started"], "cmdline": ident["cmdline"] or cmd,
                "launched": launched, "resume": resume}))
        except OSError:
            pass  # the engine runs and writes status.json itself; a reader attaches a moment later
        return proc.pid
    finally:
        lock.release()  # the engine holds it now (or, if it could not start, nobody does)


def _signal_run(run: RunDir, sig: int) -> psutil.Process | None:
    """Signal the run's engine, only when the process is proven to be it (see :func:`engine_process`)."""
    proc = run.engine_process()
    if proc is None:
        return None
    try:
        proc.send_signal(sig)  # psutil re-checks the process is the same one (start time) before sending
    except psutil.Error:
        return None
    return proc


def stop_run(run: RunDir) -> bool:
    """Ask a running engine to stop gracefully: it saves the adapter and a checkpoint, then writes 'stopped'. The
    request is recorded in stop.json (that engine's pid and start time), so every view reads 'stopping' until it
    has; a resume's engine is another process."""
    proc = _signal_run(run, signal.SIGTERM)
    if proc is None:
        return False
    try:
        atomic_write_json(run.stop_path, {"pid": proc.pid, "pid_started": proc.create_time(),
                                          "asked": round(time.time(), 3)})
    except (OSError, psutil.Error):
        pass  # the engine stops all the same; the views read 'running' until it has
    return True


def request_checkpoint(run: RunDir) -> bool:
    """Ask a running engine to save a checkpoint at the end of the current step."""
    return _signal_run(run, signal.SIGUSR1) is not None


def wait_for_state(run: RunDir, states: tuple[str, ...] = ("finished", "stopped", "failed", "crashed"),
                   timeout: float = 600.0, poll: float = 0.2) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = run.state()
        if st in states:
            return st
        time.sleep(poll)
    raise TimeoutError(f"run {run.name} still {run.state()} after {timeout:.0f}s")
