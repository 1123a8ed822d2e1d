"""The app shell: no torch at start-up, screen keys, help, the error modal for failed workers, palette commands."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

import loratui.ui.app as app_module
from loratui.ui.app import LoratuiApp, Unavailable
from loratui.core.errors import DataError
from loratui.ui.screens.help import ErrorModal, HelpScreen
from loratui.ui.screens.setup import SetupScreen

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "accelerate")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_importing_the_app_loads_no_heavy_module():
    proc = run_python(f"""
        import loratui.ui.app, sys
        heavy = [m for m in {HEAVY!r} if m in sys.modules]
        assert not heavy, heavy
    """)
    assert proc.returncode == 0, proc.stderr


def test_first_screen_mounts_without_torch():
    # The estimate starts DEBOUNCE seconds after the form settles and may then import torch in a worker thread;
    # what matters is that the first frame does not wait for it.
    proc = run_python(f"""
        import asyncio, sys
        from loratui.ui.app import LoratuiApp
        from loratui.ui.screens.setup import SetupScreen
        SetupScreen.DEBOUNCE = 30

        async def main():
            app = LoratuiApp()
            async with app.run_test(size=(80, 24)) as pilot:
                await pilot.pause()
                assert isinstance(app.screen, SetupScreen), app.screen
                assert app.screen.query_one("#f-lora-r").value == "8"
                heavy = [m for m in {HEAVY!r} if m in sys.modules]
                assert not heavy, heavy
                print("ok")

        asyncio.run(main())
    """)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


# -- screens ----------------------------------------------------------------------------------------------------


class StubScreen(Screen):
    """Stands in for UI-2's screens; records how it was made and attached."""

    made: list = []

    def __init__(self, **kwargs) -> None:
        super().__init__()
        self.kwargs = kwargs
        self.attached: list = []
        StubScreen.made.append(self)

    def compose(self):
        yield Header()
        yield Static(type(self).__name__)
        yield Footer()

    def attach(self, run_dir) -> None:
        self.attached.append(run_dir)


class MonitorScreen(StubScreen):
    pass


class RunsScreen(StubScreen):
    pass


class AdaptersScreen(StubScreen):
    pass


class MergeScreen(StubScreen):
    pass


@pytest.fixture
def stub_screens(monkeypatch):
    StubScreen.made = []
    monkeypatch.setattr(app_module, "LAZY_SCREENS", {
        "monitor": (__name__, "MonitorScreen", "Monitor"),
        "runs": (__name__, "RunsScreen", "Runs"),
        "adapters": (__name__, "AdaptersScreen", "Adapters"),
        "merge": (__name__, "MergeScreen", "Merge"),
    })
    return StubScreen


async def test_keys_switch_screens(fake_core, stub_screens):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.current_mode == "setup" and isinstance(app.screen, SetupScreen)
        for key, mode, cls in (("m", "monitor", MonitorScreen), ("r", "runs", RunsScreen),
                               ("a", "adapters", AdaptersScreen), ("g", "merge", MergeScreen),
                               ("s", "setup", SetupScreen)):
            await pilot.press(key)
            await settle(pilot)
            assert app.current_mode == mode and isinstance(app.screen, cls), key
        # F-keys do the same, also while typing in a field (letters go to the field then)
        app.screen.field("lora.r").control.focus()
        await pilot.press("m")
        await settle(pilot)
        assert app.current_mode == "setup" and app.screen.field("lora.r").get_raw() == "8m"
        await pilot.press("f3")
        await settle(pilot)
        assert app.current_mode == "monitor"
        await pilot.press("f2")
        await settle(pilot)
        assert app.current_mode == "setup"


async def test_help_opens_and_closes_and_blocks_screen_keys(fake_core, stub_screens):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("m")  # app keys sleep under a modal
        await settle(pilot)
        assert app.current_mode == "setup" and isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen)
        await pilot.press("f1")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)


async def test_quit_key(fake_core):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_worker_error_shows_the_modal(fake_core):
    def failing():
        raise DataError("column 'text' not found in data.jsonl", field="data.text_column",
                        hint="set data.text_column to one of: prompt, answer")

    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.run_worker(failing, thread=True, exit_on_error=False, description="Loading data")
        await settle(pilot)
        modal = app.screen
        assert isinstance(modal, ErrorModal)
        assert modal.message == "data.text_column: column 'text' not found in data.jsonl"
        assert modal.hint == "set data.text_column to one of: prompt, answer"
        assert modal.title_text == "Loading data failed"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen) and app.is_running


async def test_unexpected_worker_error_is_a_modal_too(fake_core):
    def failing():
        raise KeyError("boom")

    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.run_worker(failing, thread=True, exit_on_error=False)
        await settle(pilot)
        assert isinstance(app.screen, ErrorModal)
        assert app.screen.message == "KeyError: 'boom'"


async def test_open_monitor_merge_and_setup_with(fake_core, stub_screens, tmp_path):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        run = tmp_path / "runs" / "r1"
        app.open_monitor(run)
        await settle(pilot)
        assert isinstance(app.screen, MonitorScreen) and app.screen.kwargs == {"run_dir": run}
        assert app.runs_dir == run.parent
        app.open_monitor(tmp_path / "runs" / "r2")  # already made: re-attached
        await settle(pilot)
        assert app.screen.attached == [tmp_path / "runs" / "r2"]
        app.open_merge(tmp_path / "adapter")
        await settle(pilot)
        assert isinstance(app.screen, MergeScreen) and app.screen.kwargs == {"adapter": tmp_path / "adapter"}
        cfg = pinned_config()
        cfg.lora.r = 32
        app.open_setup_with(cfg)
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen) and app.screen.field("lora.r").get_raw() == "32"


async def test_missing_screen_module_shows_a_placeholder(fake_core, monkeypatch):
    monkeypatch.setattr(app_module, "LAZY_SCREENS", {**app_module.LAZY_SCREENS,
                                                     "runs": ("loratui.ui.screens.nope", "RunsScreen", "Runs")})
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, Unavailable)


async def test_palette_lists_screens_and_setup_actions(fake_core):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for title in ("Go to Monitor", "Go to Runs", "Go to Adapters", "Go to Merge", "Help",
                      "Launch", "Preview", "Open", "Save", "Targets"):
            assert title in titles
        assert "Go to Setup" not in titles  # the screen you are on


async def test_palette_offers_the_current_screens_actions_only(runs, quiet_monitor):
    """Issue 9 defect 7: on the Monitor, ctrl+p offered Setup's 'Launch run' and none of the Monitor's actions."""
    from textual.command import CommandPalette

    from fixtures import wait_until
    from loratui.ui.screens.monitor import MonitorScreen as RealMonitor

    app = LoratuiApp(runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.open_monitor(runs / "smollm2-demo")
        await wait_until(pilot, lambda: isinstance(app.screen, RealMonitor) and app.screen.state == "finished",
                         what="finished run")
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        assert "Open adapter" in commands and "Detach" in commands
        assert "Stop run" not in commands  # a finished run can't be stopped
        assert not {"Launch", "Preview", "Launch run"} & set(commands)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="palette")
        await pilot.press(*"detach", "enter")
        await wait_until(pilot, lambda: app.current_mode == "runs", what="detached to Runs")


async def test_help_mentions_the_palette(fake_core):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("f1")
        await settle(pilot)
        from fixtures import screen_text

        assert "ctrl+p" in screen_text(app)  # in the first lines, not only at the end of the scroll


def test_startup_config_error_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora: [1, 2]\n")
    cfg, source, errors = app_module.initial_config(str(bad))
    assert source is None and errors and "lora" in str(errors[0])


# -- snapshots --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_help_snapshot(fake_core, snap_compare, size):
    async def before(pilot):
        await settle(pilot)
        await pilot.press("f1")
        await settle(pilot)

    assert snap_compare(LoratuiApp(pinned_config()), terminal_size=size, run_before=before)


def test_error_modal_snapshot(fake_core, snap_compare):
    async def before(pilot):
        await settle(pilot)
        pilot.app.show_error(DataError("column 'text' not found in data.jsonl", field="data.text_column",
                                       hint="set data.text_column to one of: prompt, answer"))
        await settle(pilot)

    assert snap_compare(LoratuiApp(pinned_config()), terminal_size=(80, 24), run_before=before)
