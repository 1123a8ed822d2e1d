"""Unsaved Setup edits (issue 19 item 14): the title says 'modified', and quitting or loading another config over
them asks first; saving or launching makes the form clean again."""

from __future__ import annotations

import pytest
import yaml

from fixtures import wait_until
from loratui.ui.app import LoratuiApp
from loratui.ui.widgets.modals import ConfirmModal

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc")


async def edit_rank(pilot, value: str = "4") -> None:
    rank = pilot.app.screen.field("lora.r").control
    rank.focus()
    await pilot.press("end", "backspace", *value, "escape")
    await settle(pilot)


async def test_edits_mark_the_title_and_quitting_asks_first(fake_core):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        assert not setup.modified and "modified" not in setup.sub_title
        await edit_rank(pilot)
        assert setup.modified and setup.sub_title == "Setup · modified"
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="quit question")
        assert "unsaved Setup edits" in app.screen.title_text
        await pilot.press("n")  # stay: nothing lost
        await pilot.pause()
        assert app.is_running and app.screen is setup and setup.values["lora"]["r"] == 4
        await edit_rank(pilot, "8")  # back to the loaded value: nothing to lose
        assert not setup.modified and "modified" not in setup.sub_title
        await edit_rank(pilot, "16")
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="quit question")
        await pilot.press("ctrl+q")  # a second ctrl+q quits
        await pilot.pause()
    assert app.return_code == 0


async def test_saving_makes_the_form_clean_and_quit_asks_nothing(fake_core, tmp_path):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        await edit_rank(pilot)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is not setup, what="save dialog")
        box = app.screen.query_one("#prompt-input")
        box.value = str(tmp_path / "mine.yaml")
        await pilot.press("enter")
        await wait_until(pilot, lambda: (tmp_path / "mine.yaml").exists(), what="saved")
        await pilot.pause()
        assert not setup.modified and setup.sub_title == "Setup: mine.yaml"
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


async def test_opening_a_config_over_edits_asks_first(fake_core, tmp_path):
    other = tmp_path / "other.yaml"
    cfg = pinned_config()
    cfg.lora.r = 32
    cfg.save(other)
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        await edit_rank(pilot)
        setup.load_path(other)
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="replace question")
        await pilot.press("n")
        await pilot.pause()
        assert setup.values["lora"]["r"] == 4 and setup.modified  # kept
        setup.load_path(other)
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="replace question")
        await pilot.press("y")
        await settle(pilot)
        assert setup.values["lora"]["r"] == 32 and not setup.modified and setup.sub_title == "Setup: other.yaml"


async def test_a_saved_config_keeps_its_own_runs_folder_not_the_sessions_runs_dir(fake_core, tmp_path):
    """Issue 19 item 18: with --runs-dir, ctrl+s wrote that folder into the file."""
    import yaml

    out = tmp_path / "mine.yaml"
    app = LoratuiApp(pinned_config(), runs_dir=str(tmp_path / "session-runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        assert setup.values["output"]["runs_dir"] == str(tmp_path / "session-runs")  # the session's, in force
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is not setup, what="save dialog")
        app.screen.query_one("#prompt-input").value = str(out)
        await pilot.press("enter")
        await wait_until(pilot, out.exists, what="saved")
    assert yaml.safe_load(out.read_text()).get("output", {}).get("runs_dir", "runs") == "runs"


async def test_a_data_file_not_here_yet_is_no_edit_and_the_config_saves_with_a_warning(fake_core, tmp_path):
    """QA walk (nodata.yaml): a config whose data file is missing opened as 'modified' with no edit, and ctrl+s
    refused it ('fix the form before saving'), so a config whose data is not on this box yet could not be saved."""
    path = tmp_path / "nodata.yaml"
    cfg = pinned_config()
    cfg.data.source = str(tmp_path / "later.jsonl")
    cfg.save(path)
    app = LoratuiApp(cfg, config_source=str(path))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        assert setup.visible_errors()["data.source"].startswith("no such file or folder")
        assert setup.current_config() is None  # launch waits for the file
        assert not setup.modified and setup.sub_title == "Setup: nodata.yaml"
        await edit_rank(pilot)
        assert setup.modified
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is not setup, what="save dialog")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="overwrite question")
        await pilot.press("y")
        await wait_until(pilot, lambda: app.screen is setup and not setup.modified, what="saved")
        shown = [n.message for n in app._notifications]
        assert any(m.startswith(f"saved {path}; data.source: no such file or folder") and "launch waits" in m
                   for m in shown), shown
        await edit_rank(pilot, "-4")  # a real mistake still stops the save
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.screen is setup
        assert any("fix the form before saving: lora.r" in n.message for n in app._notifications)
    saved = yaml.safe_load(path.read_text())
    assert saved["data"]["source"] == str(tmp_path / "later.jsonl") and saved["lora"]["r"] == 4


async def test_the_cannot_launch_toast_goes_once_its_field_is_fixed(fake_core):
    """QA walk: 'cannot launch: lora.r: ...' stayed on the screen after the field was fixed."""
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        await edit_rank(pilot, "-4")
        await pilot.press("ctrl+l")
        await settle(pilot)

        def toasts() -> list[str]:
            return [n.message for n in app._notifications if n.message.startswith("cannot launch")]

        assert len(toasts()) == 1 and toasts()[0].startswith("cannot launch: lora.r:")
        await pilot.press("escape", "ctrl+l")  # a second attempt replaces it
        await settle(pilot)
        assert len(toasts()) == 1
        setup.field("lora.r").control.value = "4"
        await settle(pilot)
        assert toasts() == [] and setup.current_config() is not None
