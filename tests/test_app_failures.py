"""Every failed worker reaches the user, on every screen (issue 6): ``Worker.StateChanged`` does not bubble, so each
screen handles its own. Actions the user started end in the error modal; pollers show a toast and try again."""

from __future__ import annotations

import pytest

from fixtures import FixedSampler, host_app, no_gpu_snapshot, screen_text, wait_until
from loratui.ui.screens import adapters as adapters_mod
from loratui.ui.screens import merge as merge_mod
from loratui.ui.screens import monitor as monitor_mod
from loratui.ui.screens import runs as runs_mod
from loratui.ui.screens.adapters import AdaptersScreen
from loratui.ui.screens.help import ErrorModal
from loratui.ui.screens.merge import MergeScreen
from loratui.ui.screens.monitor import MonitorScreen
from loratui.ui.screens.runs import RunsScreen
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.modals import ConfirmModal

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc")


def modal_text(app) -> str:
    assert isinstance(app.screen, ErrorModal), app.screen
    return f"{app.screen.title_text}: {app.screen.message}"


async def test_setup_preview_failure_shows_the_modal(fake_core, tmp_path, monkeypatch):
    from loratui.ui.app import LoratuiApp

    def broken(cfg, n=3):
        raise RuntimeError("the helper process died")

    monkeypatch.setattr(setup_core, "preview", broken)
    app = LoratuiApp(pinned_config(), runs_dir=str(tmp_path / "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), what="error modal")
        assert modal_text(app) == "Rendering the data preview failed: RuntimeError: the helper process died"


async def test_runs_resume_failure_shows_the_modal(runs, monkeypatch):
    def broken(run, *, resume=False, env=None):
        raise PermissionError("cannot start the engine: permission denied")

    monkeypatch.setattr(runs_mod, "launch_detached", broken)
    app = host_app(lambda: RunsScreen(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        while screen.selected.state not in ("stopped", "crashed"):
            await pilot.press("down")
        await pilot.press("u")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), what="error modal")
        assert "Resuming run failed" in modal_text(app) and "permission denied" in modal_text(app)


async def test_runs_listing_failure_is_a_toast_then_a_retry(runs, monkeypatch):
    real = runs_mod.SummaryCache.summaries
    calls = []

    def flaky(self, runs_dir):
        calls.append(runs_dir)
        if len(calls) <= 2:  # mounting and resuming the screen both list (the second cancels the first)
            raise OSError("runs folder on a lost NFS mount")
        return real(self, runs_dir)

    monkeypatch.setattr(runs_mod.SummaryCache, "summaries", flaky)
    app = host_app(lambda: RunsScreen(runs))
    async with app.run_test(size=(100, 24), notifications=True) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: "Listing runs failed" in screen_text(app), what="toast")
        assert "lost NFS mount" in screen_text(app) and "retrying in" in screen_text(app)
        await wait_until(pilot, lambda: screen.loaded and screen.summaries, what="retried", timeout=5)


async def test_monitor_watcher_failure_is_a_toast_and_it_reattaches(runs, monkeypatch, quiet_monitor):
    real = monitor_mod.RunDir
    made = []

    def flaky(path):
        made.append(path)
        if len(made) == 1:
            raise OSError("events.jsonl: input/output error")
        return real(path)

    monkeypatch.setattr(monitor_mod, "RunDir", flaky)
    app = host_app(lambda: MonitorScreen(runs / "smollm2-demo"))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: "Watching run failed" in screen_text(app), what="toast")
        assert "input/output error" in screen_text(app)
        await wait_until(pilot, lambda: screen.state == "finished", what="re-attached", timeout=5)


async def test_monitor_gpu_sampler_failure_is_a_toast_and_it_samples_again(runs, monkeypatch, quiet_monitor):
    class Flaky(FixedSampler):
        calls = 0

        def sample(self):
            Flaky.calls += 1
            if Flaky.calls == 1:
                raise RuntimeError("NVML went away")
            return super().sample()

    monkeypatch.setattr(monitor_mod, "make_sampler", lambda pid: Flaky(no_gpu_snapshot()))
    app = host_app(lambda: MonitorScreen(runs / "smollm2-demo"))
    async with app.run_test(size=(100, 30), notifications=True) as pilot:
        await wait_until(pilot, lambda: "Sampling GPUs failed" in screen_text(app), what="toast")
        await wait_until(pilot, lambda: app.screen.query_one("#mon-gpu").snapshot is not None, what="sampled",
                         timeout=5)


async def test_adapters_delete_failure_shows_the_modal(runs, monkeypatch):
    def broken(path):
        raise PermissionError(f"[Errno 13] Permission denied: '{path}'")

    monkeypatch.setattr(adapters_mod, "delete_adapter", broken)
    app = host_app(lambda: AdaptersScreen(), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="adapters")
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), what="error modal")
        assert "Deleting the adapter failed" in modal_text(app) and "Permission denied" in modal_text(app)
        assert screen.selected.path.exists()


async def test_merge_worker_failure_shows_the_modal_and_leaves_running(runs, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("bad environment for the merge process")

    monkeypatch.setattr(merge_mod.subprocess, "Popen", broken)
    app = host_app(lambda: MergeScreen(runs / "smollm2-demo" / "adapter"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        for key in ("ctrl+n", "enter", "ctrl+n", "enter"):
            await pilot.press(key)
        assert screen.step == 4
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), what="error modal")
        assert "Merging adapter failed" in modal_text(app) and "bad environment" in modal_text(app)
        assert screen.phase == "failed"
