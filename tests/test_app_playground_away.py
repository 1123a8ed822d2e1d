"""The Playground gives its model's memory back while the user is on other screens: after a while away, or at once
when a run starts training while the model sits on the GPU; coming back loads the same model again, the answers on
screen kept (tests/fixtures/fake_playground.py stands in for the generation process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fixtures import make_live_run, wait_until
from loratui.core import playground as playground_core
from loratui.ui.screens import playground
from loratui.ui.screens.playground import PlaygroundScreen

FAKE = [sys.executable, str(Path(__file__).resolve().parent / "fixtures" / "fake_playground.py")]


async def _open_with_an_answer(pilot, app):
    app.open_monitor(app.runs_dir / "smollm2-demo")
    await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.state == "finished", what="monitor")
    await pilot.press("t")
    await wait_until(pilot, lambda: isinstance(app.screen, PlaygroundScreen) and app.screen.info, what="playground")
    screen = app.screen
    screen.query_one("#pg-prompt").text = "Extract the contact: Ana Ruiz from Lyon"
    await pilot.press("ctrl+g")
    await wait_until(pilot, lambda: not screen.busy and screen.answers["adapter"].text, what="answers")
    return screen


async def test_away_long_enough_frees_the_model_and_coming_back_loads_it_again(runs, monkeypatch):
    from loratui.ui.app import LoratuiApp

    monkeypatch.setattr(playground_core, "worker_command", lambda: FAKE)
    monkeypatch.setattr(playground, "AWAY_FREE_S", 0.4)
    monkeypatch.setattr(playground, "AWAY_POLL_S", 0.05)
    app = LoratuiApp(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_with_an_answer(pilot, app)
        proc = screen.client.proc
        answer = screen.answers["adapter"].text
        await pilot.press("question_mark")  # a dialog over the Playground is not away
        await pilot.pause(0.6)
        assert screen.client is not None and not screen.freed
        await pilot.press("escape")
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.freed, what="the model freed")
        assert "on other screens" in screen.freed and screen.client is None
        await wait_until(pilot, lambda: proc.poll() is not None, what="the generation process ended")
        await pilot.press("t")
        await wait_until(pilot, lambda: app.screen is screen and screen.info and not screen.busy, what="loaded again")
        assert screen.info["model"].endswith("smollm2-demo/adapter") and screen.client.proc is not proc
        assert screen.answers["adapter"].text == answer  # the same model: its answer stays on screen
        assert not screen.freed


async def test_a_run_training_frees_a_model_on_the_gpu_at_once(runs, monkeypatch):
    from loratui.ui.app import LoratuiApp

    monkeypatch.setattr(playground_core, "worker_command", lambda: FAKE)
    monkeypatch.setattr(playground, "AWAY_POLL_S", 0.05)
    monkeypatch.setenv("FAKE_PLAYGROUND_DEVICE", "cuda")
    app = LoratuiApp(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_with_an_answer(pilot, app)
        await pilot.press("escape", "r")  # the prompt box had the focus: escape leaves it
        await pilot.pause(0.4)
        assert screen.client is not None  # nothing training yet, and not away for long
        make_live_run(runs, "next-run", pid=os.getpid())
        await wait_until(pilot, lambda: screen.freed, what="the model freed")
        assert app.current_mode == "runs" and screen.freed == "next-run is training and needs the GPU"


async def test_a_model_on_the_cpu_stays_while_a_run_trains(runs, monkeypatch):
    from loratui.ui.app import LoratuiApp

    monkeypatch.setattr(playground_core, "worker_command", lambda: FAKE)
    monkeypatch.setattr(playground, "AWAY_POLL_S", 0.05)
    app = LoratuiApp(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_with_an_answer(pilot, app)
        make_live_run(runs, "next-run", pid=os.getpid())
        await pilot.press("escape", "r")
        await pilot.pause(0.5)
        assert app.current_mode == "runs"
        assert screen.client is not None and screen.client.running and not screen.freed


async def test_g_from_the_playground_merges_its_adapter(runs, monkeypatch):
    """g from the Playground opened Merge with an empty adapter field; from Adapters it was filled (QA walk)."""
    from loratui.ui.app import LoratuiApp

    monkeypatch.setattr(playground_core, "worker_command", lambda: FAKE)
    app = LoratuiApp(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _open_with_an_answer(pilot, app)
        await pilot.press("escape", "g")
        await wait_until(pilot, lambda: app.current_mode == "merge", what="merge")
        await pilot.pause()
        adapter = app.screen.query_one("#mg-adapter").value
        assert adapter and Path(adapter).resolve() == (runs / "smollm2-demo" / "adapter").resolve()
