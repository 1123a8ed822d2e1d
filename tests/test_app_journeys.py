"""End-to-end journeys through the real app with the REAL engine subprocess and the REAL merge subprocess.

Nothing here is faked: Setup's launch key runs preflight, creates the run folder and starts ``python -m loratui
engine`` detached; the monitor tails its events.jsonl; the merge wizard runs ``python -m loratui merge``. Runs are
kept tiny (the random 2-layer ``tiny_llama``, 32 examples of 64 tokens, a handful of steps) because the CI machine
has two CPU cores. Waits poll the app's state (``pilot.pause(0.2)``) up to a timeout; there are no fixed sleeps.

Every engine started in a test is stopped in a finalizer (``runs.stop_run`` and a wait; a kill as a last resort),
so no training process outlives the test, whatever fails.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from fixtures import screen_text
from loratui.core import runs
from loratui.ui.app import LoratuiApp
from loratui.core.config import load_config
from loratui.core.gpu import format_bytes
from loratui.ui.screens.adapters import AdaptersScreen
from loratui.ui.screens.merge import MergeScreen
from loratui.ui.screens.monitor import MonitorScreen, RunUpdated
from loratui.ui.screens.runs import RunsScreen
from loratui.ui.screens.setup import SetupScreen
from loratui.ui.widgets.loss_chart import LossChart
from loratui.ui.widgets.modals import ConfirmModal
from loratui.ui.widgets.modals import PromptModal
from loratui.ui.widgets.setup_modals import ConfigPicker

WAIT = 90.0  # seconds: the longest any single wait may take before the test fails with a diagnosis


# -- helpers ----------------------------------------------------------------------------------------------------


def tiny_config(tmp_path: Path, model_dir: Path, runs_dir: Path, name: str, **train) -> Path:
    """A YAML config for a tiny real run on ``model_dir`` (one logged loss per step, no eval unless asked)."""
    data = {
        "model": {"name": str(model_dir)},
        "lora": {"r": 4, "alpha": 8},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 32,
                 "validation_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 4, "batch_size": 2, "lr": 1e-3, "logging_steps": 1, "eval_steps": None,
                  "save_steps": 10_000, **train},
        "output": {"runs_dir": str(runs_dir), "name": name},
    }
    if train.get("eval_steps"):  # an eval split whose responses fit in max_length
        data["data"].update(validation_fraction=0.25, max_length=96)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def step_events(run: runs.RunDir) -> list[dict]:
    return [e for e in run.events() if e["kind"] == "step"]


def diagnose(run_dir: Path | None) -> str:
    if run_dir is None or not Path(run_dir).is_dir():
        return ""
    run = runs.RunDir(run_dir)
    kinds = [e["kind"] for e in run.events()]
    return f"\nrun {run.name}: state {run.state()}, events {kinds[-12:]}\nlog:\n" + "\n".join(run.log_tail(15))


async def poll(pilot, condition, what: str, *, timeout: float = WAIT, run_dir: Path | None = None) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` s, saying what the run was doing."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + diagnose(run_dir))
        if run_dir is not None and runs.RunDir(run_dir).state() in ("failed", "crashed"):
            raise AssertionError(f"the run ended badly while waiting for {what}" + diagnose(run_dir))
        await pilot.pause(0.2)
    await pilot.pause()  # let the screen repaint what made it true


def wait_for(predicate, what: str, timeout: float = WAIT, run_dir: Path | None = None) -> None:
    """The same, outside an app (between two app instances)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + diagnose(run_dir))
        time.sleep(0.2)


def reap(runs_dir: Path) -> list[str]:
    """Stop every engine still running under ``runs_dir`` and wait for it; kill one that does not stop.

    Only detached engines are touched: a run trained in this process (``loratui train`` called in-process)
    records this process's pid, which is never signalled.
    """
    leftovers = []
    if not runs_dir.is_dir():
        return leftovers
    for folder in runs_dir.iterdir():
        run = runs.RunDir(folder)
        if not run.exists():
            continue
        status = run.read_status()
        pid = status.get("pid")
        if not pid or pid == os.getpid() or not runs.pid_alive(pid, status.get("pid_started")):
            continue
        leftovers.append(run.name)
        if runs.stop_run(run):
            try:
                runs.wait_for_state(run, timeout=60)
            except TimeoutError:
                pass
        deadline = time.monotonic() + 15
        while runs.pid_alive(pid, status.get("pid_started")) and time.monotonic() < deadline:
            time.sleep(0.1)
        try:
            own_group = os.getpgid(pid) == pid != os.getpgid(0)  # launch_detached: its own session
        except ProcessLookupError:
            continue
        if own_group and runs.pid_alive(pid, status.get("pid_started")):
            os.killpg(pid, signal.SIGKILL)
    return leftovers


@pytest.fixture
def engines(runs_dir, tmp_path, monkeypatch):
    """The runs folder, with every engine started under it stopped at teardown (pass or fail)."""
    monkeypatch.chdir(tmp_path)  # the app's default ./runs and ./configs land in the test's folder
    try:
        yield runs_dir
    finally:
        reap(runs_dir)


async def open_config_via_picker(pilot, path: Path) -> None:
    """ctrl+o, the last entry (Other file...), type the path, enter: what a user does to load a YAML file."""
    app = pilot.app
    await pilot.press("ctrl+o")
    await poll(pilot, lambda: isinstance(app.screen, ConfigPicker), "the config picker", timeout=10)
    await pilot.press("end", "enter")
    await poll(pilot, lambda: isinstance(app.screen, PromptModal), "the path prompt", timeout=10)
    app.screen.query_one("#prompt-input").value = str(path)  # typing a long path key by key costs ~0.1 s a key
    await pilot.press("enter")
    await poll(pilot, lambda: isinstance(app.screen, SetupScreen), "the setup form", timeout=10)


async def launch_from_setup(pilot) -> MonitorScreen:
    """The launch key on a valid form: preflight, run folder, detached engine, then the monitor."""
    app = pilot.app
    setup = app.screen
    assert isinstance(setup, SetupScreen)
    await poll(pilot, lambda: setup.current_config() is not None, "a valid form", timeout=20)
    await pilot.press("ctrl+l")
    await poll(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor after launch", timeout=60)
    return app.screen


# -- 1. launch from Setup, watch it to the end ------------------------------------------------------------------


async def test_launch_from_setup_and_watch_the_run_finish(tmp_path, tiny_llama, engines):
    cfg = tiny_config(tmp_path, tiny_llama, engines, "watched", max_steps=6, eval_steps=6)
    run_dir = engines / "watched"
    app = LoratuiApp()
    seen: list[tuple[int, int]] = []  # (step shown, train points in the chart) at each poll
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await open_config_via_picker(pilot, cfg)
        setup = app.screen
        assert setup.sub_title == "Setup: watched.yaml"
        assert setup.field("model.name").get_raw() == str(tiny_llama)
        assert setup.field("output.runs_dir").get_raw() == str(engines)

        monitor = await launch_from_setup(pilot)
        assert monitor.run_dir == run_dir and app.current_mode == "monitor"
        assert app.runs_dir == engines
        chart = monitor.query_one(LossChart)
        bar = monitor.query_one("#mon-progress")

        def finished() -> bool:
            seen.append((monitor.view.step, len(chart.train[0])))
            return monitor.state == "finished"

        await poll(pilot, finished, "the run to finish", run_dir=run_dir)

        # while it trained the monitor showed it moving: some step short of the end, with part of the curve
        assert any(0 < step < 6 and 0 < points < 6 for step, points in seen), seen
        steps_seen = [step for step, _ in seen]
        assert steps_seen == sorted(steps_seen)  # progress never went backwards

        # the finished state: full progress bar, step 6/6, the banner, both curves
        assert bar.total == 6 and bar.progress == 6
        text = screen_text(app)
        assert "finished" in text and "✔ finished" in text, text
        assert "step 6/6" in text and "100%" in text, text
        assert "adapter saved" in text
        logged = step_events(runs.RunDir(run_dir))
        assert chart.train[0] == [e["step"] for e in logged] == [1, 2, 3, 4, 5, 6]
        assert chart.train[1] == pytest.approx([e["loss"] for e in logged])
        evals = [e for e in runs.RunDir(run_dir).events() if e["kind"] == "eval"]
        assert chart.eval[0] == [e["step"] for e in evals] and chart.eval[0][-1] == 6  # eval on start, and at 6
        assert chart.eval[1] == pytest.approx([e["eval_loss"] for e in evals])
        assert "waiting for the first logged step" not in text
        assert not monitor.check_action("stop", ()) and monitor.check_action("open_adapter", ())
    assert runs.RunDir(run_dir).state() == "finished"
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


# -- 2. quit while training, reattach from a new app, stop it from the monitor, find its adapter ----------------


async def test_quit_while_training_reattach_then_stop_and_browse_its_adapter(tmp_path, tiny_llama, engines):
    """One live engine for two journeys: a run outlives the app that launched it, and a run stopped from the monitor
    leaves an adapter the Adapters screen shows."""
    cfg_path = tiny_config(tmp_path, tiny_llama, engines, "survivor", max_steps=10_000)
    run_dir = engines / "survivor"
    run = runs.RunDir(run_dir)
    try:
        # first app: launch, watch a step, quit (q): the run keeps training on its own
        first = LoratuiApp(load_config(cfg_path), config_source=cfg_path)
        async with first.run_test(size=(80, 24)) as pilot:
            monitor = await launch_from_setup(pilot)
            await poll(pilot, lambda: monitor.view.step >= 1, "the first step", run_dir=run_dir)
            pid = monitor.pid
            await pilot.press("q")
        assert first.return_code in (0, None)
        assert pid and runs.pid_alive(pid) and run.state() == "running"
        shown_by_first = monitor.view.step

        # more steps land while no app watches
        wait_for(lambda: len(step_events(run)) >= shown_by_first + 2, "steps written with no app open",
                 run_dir=run_dir)
        before = step_events(run)
        assert run.state() == "running"

        # second app on the same runs folder: Runs, the run is there and running; enter attaches
        updates: list[RunUpdated] = []
        second = LoratuiApp(runs_dir=engines)
        hook = lambda m: updates.append(m) if isinstance(m, RunUpdated) else None  # noqa: E731
        async with second.run_test(size=(80, 24), message_hook=hook) as pilot:
            await pilot.press("r")
            await poll(pilot, lambda: isinstance(second.screen, RunsScreen) and second.screen.loaded, "the runs",
                       timeout=20)
            runs_screen = second.screen
            assert [(s.name, s.state) for s in runs_screen.summaries] == [("survivor", "running")]
            text = screen_text(second)
            assert "survivor" in text and "running" in text
            await pilot.press("enter")
            await poll(pilot, lambda: isinstance(second.screen, MonitorScreen), "the monitor", timeout=10)
            monitor = second.screen
            assert monitor.run_dir == run_dir
            await poll(pilot, lambda: bool(updates), "the first update", timeout=10)

            # the history written before this app started is there from the first picture on
            first_view = updates[0].view
            assert first_view.step >= before[-1]["step"]
            assert first_view.loss_points[0][: len(before)] == [e["step"] for e in before]
            assert first_view.loss_points[1][: len(before)] == pytest.approx([e["loss"] for e in before])
            assert first_view.max_steps == 10_000 and first_view.lifecycle == "started"

            # and it keeps up with the live run
            await poll(pilot, lambda: monitor.state == "running" and monitor.view.step > first_view.step,
                       "a new step after attaching", run_dir=run_dir)
            chart = monitor.query_one(LossChart)
            now = step_events(run)
            shown = monitor.view.step
            assert chart.train[0] == [e["step"] for e in now if e["step"] <= shown]
            assert f"step {shown}/10000" in screen_text(second)

            # stop it from here, then the picture equals the whole events file
            await pilot.press("x")
            await poll(pilot, lambda: isinstance(second.screen, ConfirmModal), "the stop confirmation", timeout=10)
            assert "Stop survivor?" in screen_text(second)
            await pilot.press("y")
            await poll(pilot, lambda: monitor.state == "stopped", "the run to stop", run_dir=run_dir)
            final = step_events(run)
            assert chart.train[0] == [e["step"] for e in final]
            assert chart.train[1] == pytest.approx([e["loss"] for e in final])
            assert monitor.view.step == final[-1]["step"]
            stopped = [e for e in run.events() if e["kind"] == "stopped"][-1]
            text = screen_text(second)
            assert f"■ stopped at step {stopped['step']}" in text and "adapter saved" in text, text
            assert monitor.view.step == stopped["step"] >= 2
            assert not monitor.check_action("stop", ())

            # o opens the adapter on the Adapters screen
            await pilot.press("o")
            await poll(pilot, lambda: isinstance(second.screen, AdaptersScreen) and second.screen.loaded,
                       "the adapters", timeout=20)
            screen = second.screen
            adapter_dir = run_dir / "adapter"
            names = sorted(a.name for a in screen.adapters)
            assert names == ["survivor", f"survivor/checkpoint-{stopped['step']}"], names
            # the cursor lands on the adapter itself (not the checkpoint beside it)
            await poll(pilot, lambda: screen.selected is not None and screen.selected.path == adapter_dir,
                       "the cursor on the run's adapter", timeout=10)
            a = screen.selected
            on_disk = {p.relative_to(adapter_dir).as_posix(): os.path.getsize(p)
                       for p in adapter_dir.rglob("*") if p.is_file()}
            assert dict(a.files) == on_disk
            assert a.size == sum(on_disk.values())
            assert "adapter_model.safetensors" in on_disk and "adapter_config.json" in on_disk
            text = screen_text(second)
            weights = next((ln for ln in text.splitlines() if "safetensors" in ln), text)  # cut in
            assert format_bytes(os.path.getsize(adapter_dir / "adapter_model.safetensors")) in weights, text  # the
            assert "adapter_config.json" in text  # middle at 80 columns: 'adapter_m….safetensors', its kind kept
            assert f"{len(on_disk)} files" in text and format_bytes(a.size) in text
            assert str(tiny_llama.name) in text  # the base model column / detail
    finally:
        if runs.stop_run(run):
            runs.wait_for_state(run, timeout=60)
    assert run.state() == "stopped"
    wait_for(lambda: not runs.pid_alive(run.read_status().get("pid")), "the engine process to exit", timeout=20)


# -- 3. merge a real adapter with the real merge process --------------------------------------------------------


async def test_merge_a_trained_adapter_through_the_wizard(tmp_path, tiny_llama, engines):
    from loratui.cli import main as cli_main

    cfg_path = tiny_config(tmp_path, tiny_llama, engines, "tomerge", max_steps=2)
    assert cli_main(["train", str(cfg_path)]) == 0  # a real run, in this process (no second torch import)
    adapter = engines / "tomerge" / "adapter"
    output = engines / "tomerge" / "merged"
    assert (adapter / "adapter_config.json").is_file()

    app = LoratuiApp(load_config(cfg_path), runs_dir=engines)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("a")
        await poll(pilot, lambda: isinstance(app.screen, AdaptersScreen) and app.screen.loaded, "the adapters",
                   timeout=20)
        screen = app.screen
        keys = [a.path for a in screen.adapters]
        assert adapter in keys, keys
        while screen.selected is None or screen.selected.path != adapter:  # move the cursor down to it
            await pilot.press("down")
        await pilot.press("g")
        await poll(pilot, lambda: isinstance(app.screen, MergeScreen), "the merge wizard", timeout=10)
        wizard = app.screen
        assert wizard.adapter == adapter and wizard.base == str(tiny_llama) and wizard.output == output

        await pilot.press("ctrl+n")  # adapter -> base
        assert wizard.step == 1
        await pilot.press("enter")  # base (prefilled from the adapter) -> dtype
        assert wizard.step == 2
        await pilot.press("down", "down", "enter")  # the third radio button
        assert wizard.dtype == "fp32"
        await pilot.press("ctrl+n")  # dtype -> output
        assert wizard.step == 3
        await pilot.press("enter")  # output -> confirm
        assert wizard.step == 4
        text = screen_text(app)
        assert "fp32" in text and str(output) in text and str(tiny_llama) in text

        await pilot.press("ctrl+n")  # Merge
        assert wizard.phase == "running"
        await poll(pilot, lambda: wizard.phase in ("done", "failed"), "the merge process")
        text = screen_text(app)
        assert wizard.phase == "done", text
        assert "✔ merged" in text and str(output) in text, text
        assert wizard.result["output"] == str(output)
        disk = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
        assert format_bytes(disk) in text
        assert "max difference" in text and wizard.result["max_diff"] < 1e-3

    import torch
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(output))
    assert merged.dtype == torch.float32
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert json.loads((output / "config.json").read_text())["hidden_size"] == 64
