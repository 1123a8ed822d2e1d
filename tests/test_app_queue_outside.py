"""The Queue screen beside runs outside the queue, and while a cancelled run stops (a walk at 80x24): a config added
while a run trained from Setup started at once beside it; a cancelled run read 'running' until its engine stopped,
then '-' for progress where `loratui runs` read '1/30   3%'."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from fixtures import host_app, make_live_run, screen_text, wait_until
from loratui.core.queue_runner import step
from loratui.core.queue import RunQueue
from loratui.core.runs import RunDir
from test_queue_outside import FakeLaunch

pytestmark = pytest.mark.usefixtures("utc")
CONFIG = Path(__file__).resolve().parent / "fixtures" / "runs" / "smollm2-demo" / "config.yaml"


async def test_a_config_added_beside_a_run_from_setup_waits_and_says_why(tmp_path, monkeypatch):
    from loratui.ui.screens.queue import QueueScreen

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    make_live_run(runs, "smollm2-demo", pid=os.getpid(), events=[{"kind": "started", "time": time.time(),
                                                                    "max_steps": 30, "gpus": []}])
    launch = FakeLaunch()
    # the runner, run here: claimed by this process, one pass each time the screen asks for it
    monkeypatch.setattr(RunQueue, "ensure_runner", lambda self, gpus=None: self.claim_runner() and step(self, 
        gpus, echo=lambda line: None, launch=launch) and os.getpid())
    app = host_app(lambda: QueueScreen(), runs_dir=Path("runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="queue")
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#prompt-input").value = str(CONFIG)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.entries and screen.runner, what="queued, runner on")
        await wait_until(pilot, lambda: "outside the queue" in screen_text(app), what="the reason")
        text = screen_text(app)
        assert launch.started == [] and [e.state for e in screen.entries] == ["waiting"]
        assert "waiting: smollm2-demo is training (outside the queue); starts when it ends" in text
        assert "1 waiting, 0 running" in text


async def test_a_cancelled_run_reads_stopping_until_it_stops(tmp_path, monkeypatch, capsys):
    from loratui.core import queue as queue_core
    from loratui.core.study import parse_study
    from loratui.ui.screens.queue import QueueScreen

    monkeypatch.chdir(tmp_path)
    asked = []
    monkeypatch.setattr(queue_core, "stop_run", asked.append)  # this test process stands in for the engine
    q = RunQueue(tmp_path / "runs")
    q.add_study(parse_study({"study": "s", "config": {"model": {"name": "m"}}, "grid": {"lora.r": [4, 8]}}))
    step(q, launch=FakeLaunch(), echo=lambda line: None)
    app = host_app(lambda: QueueScreen(), runs_dir=Path("runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="queue")
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: asked, what="stop asked")
        await wait_until(pilot, lambda: screen.entries[0].cancel_requested, what="read again")
        rows = [ln for ln in screen_text(app).splitlines() if "s-r4" in ln]
        assert rows and "stopping" in rows[0] and "running" not in rows[0]
        assert "1 waiting, 1 stopping" in screen_text(app)  # '0 running' left out: 80 columns
    from loratui.cli import main as cli_main

    assert cli_main(["queue", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "stopping  s-r4" in capsys.readouterr().out


async def test_a_stopped_runs_progress_is_the_one_loratui_runs_shows(tmp_path, monkeypatch, capsys):
    from loratui.cli import main as cli_main
    from loratui.core.study import parse_study
    from loratui.ui.screens.queue import QueueScreen

    monkeypatch.chdir(tmp_path)
    q = RunQueue(tmp_path / "runs")
    (entry,) = q.add_study(parse_study({"study": "s", "config": {"model": {"name": "m"}}}))
    step(q, launch=FakeLaunch(), echo=lambda line: None)
    run = RunDir(q.runs_dir / entry.run)
    t = time.time()
    events = [{"kind": "started", "time": t - 60, "max_steps": 30},
              {"kind": "step", "time": t - 30, "step": 1, "loss": 2.5},
              {"kind": "stopped", "time": t - 1, "step": 1}]
    run.events_path.write_text("".join(json.dumps(e) + "\n" for e in events))
    run.write_status(state="stopped", ended=t - 1)
    step(q, echo=lambda line: None)
    monkeypatch.setenv("COLUMNS", "120")
    assert cli_main(["runs", "--runs-dir", str(q.runs_dir)]) == 0
    listed = capsys.readouterr().out
    assert "1/30   3%" in listed
    app = host_app(lambda: QueueScreen(), runs_dir=Path("runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="queue")
        row = next(ln for ln in screen_text(app).splitlines() if entry.run in ln)
        assert "stopped" in row and "1/30   3%" in row
