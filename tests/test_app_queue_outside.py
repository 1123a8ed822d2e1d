"""The Queue screen beside runs outside the queue (a walk at 80x24): a config added while a run trained from Setup
started at once beside it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fixtures import host_app, make_live_run, screen_text, wait_until
from loratui.core.queue import RunQueue
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
    monkeypatch.setattr(RunQueue, "ensure_runner", lambda self, gpus=None: self.claim_runner() and self.step(
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
