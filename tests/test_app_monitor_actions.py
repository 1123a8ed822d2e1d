"""Monitor screen, its actions: stop (asked first, then SIGTERM), checkpoint now (SIGUSR1), detach, open the adapter.
Split from test_app_monitor.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from fixtures import host_app, make_live_run, recorded_events, recorded_head, screen_text, wait_until
from loratui.ui.screens import monitor, monitor_actions
from loratui.ui.screens.monitor import MonitorScreen
from loratui.ui.widgets.modals import ConfirmModal


pytestmark = pytest.mark.usefixtures("utc", "quiet_monitor")

ENGINE_STANDIN = """
import signal, sys, time, pathlib
from loratui.core.identity import RunLock
out = pathlib.Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *a: out.write_text("checkpoint"))
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
print("ready", flush=True)
lock = RunLock.acquire(pathlib.Path(sys.stdin.readline().strip()))  # the run it stands in for, as an engine does
print("locked", flush=True)
time.sleep(60)
"""


def take_lock(proc: subprocess.Popen, run) -> None:
    """The stand-in engine holds ``run``'s lock from now on."""
    proc.stdin.write(f"{run}\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "locked"


@pytest.fixture
def engine_standin(tmp_path):
    flag = tmp_path / "signals.txt"
    proc = subprocess.Popen([sys.executable, "-c", ENGINE_STANDIN, str(flag)], stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc, flag
    if proc.poll() is None:
        proc.kill()
    proc.wait()


async def test_stop_asks_first_then_signals(runs, engine_standin):
    proc, flag = engine_standin
    events = recorded_head(20)
    run = make_live_run(runs, "live", pid=proc.pid, events=events)
    take_lock(proc, run)
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "running", what="running")

        await pilot.press("c")
        await wait_until(pilot, lambda: flag.exists(), what="SIGUSR1")
        assert flag.read_text() == "checkpoint" and proc.poll() is None

        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirmation")
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is screen and proc.poll() is None  # cancelled: nothing sent

        screen.state = "stalled"  # a stalled run is stopped as from Runs (x was offered, then said 'not running')
        screen.action_stop()
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirmation")
        await pilot.press("y")
        assert proc.wait(timeout=10) == 0  # SIGTERM: the graceful path


async def test_the_badge_says_stopping_until_the_run_has_stopped(runs, monkeypatch):
    """A walk at 80x24: after x, y the header said 'running' for a minute (the engine finishes its step and saves
    first). The badge says 'stopping' from the request until the run's stopped event: the run state every view reads
    (stop.json, as stop_run records it), not a note of the Monitor's own."""
    import psutil

    monkeypatch.setattr(monitor, "IDLE_POLL_INTERVAL", 0.05)
    asked = []

    def stop_run(run):  # what core's stop_run records, without the signal (the 'engine' is this test process)
        asked.append(run.name)
        run.stop_path.write_text(json.dumps({"pid": os.getpid(), "pid_started": psutil.Process().create_time()}))
        return True

    monkeypatch.setattr(monitor_actions, "stop_run", stop_run)
    events = recorded_head(20)
    run = make_live_run(runs, "live", pid=os.getpid(), events=events)
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "running", what="running")
        assert " running " in screen_text(app).splitlines()[0]
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: " stopping " in screen_text(app), what="the stopping badge")
        assert asked == ["live"]
        await wait_until(pilot, lambda: screen.state == "stopping", what="the fold's stopping")
        await pilot.pause(0.3)
        assert screen.state == "stopping" and " stopping " in screen_text(app)  # the watcher says the same
        with open(run / "events.jsonl", "a") as fh:
            fh.write(json.dumps({"kind": "stopped", "time": time.time(), "step": 20}) + "\n")
        (run / "status.json").write_text(json.dumps({"state": "stopped", "step": 20}))
        await wait_until(pilot, lambda: screen.state == "stopped", what="stopped")
        assert " stopping " not in screen_text(app) and " stopped " in screen_text(app)


async def test_detach_leaves_run_going(runs, engine_standin):
    proc, _ = engine_standin
    run = make_live_run(runs, "live", pid=proc.pid, events=recorded_events()[:3])
    take_lock(proc, run)
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "running", what="running")
        await pilot.press("d")
        await wait_until(pilot, lambda: app.screen is not screen, what="leaving")
        await wait_until(pilot, lambda: not any(w.group == "run" and w.is_running for w in app.workers),
                         what="watcher cancelled")
        assert proc.poll() is None


async def test_open_adapter_when_finished(runs):
    from loratui.ui.screens.adapters import AdaptersScreen

    app = host_app(lambda: MonitorScreen(runs / "smollm2-demo"), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "finished", what="finished")
        await pilot.press("x", "c")  # they did nothing at all on a finished run (QA walk): each says why
        await pilot.pause()
        said = [n.message for n in app._notifications]
        assert len(said) == 2 and not isinstance(app.screen, ConfirmModal), said
        assert said[0].startswith("smollm2-demo already finished: nothing to stop") and "no engine" in said[1]
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, AdaptersScreen) and app.screen.loaded, what="adapters")
        assert app.screen.selected.path == runs / "smollm2-demo" / "adapter"
