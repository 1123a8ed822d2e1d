"""Dialogs as a hurried user meets them (issue 19 item 13): the keys typed right after the key that opens a dialog
land in it, in order, however busy the app is; a dialog that only shows an example says so and does not close
silently on Enter."""

from __future__ import annotations

import pytest
from textual import events
from textual.widgets import Input

from fixtures import screen_text, wait_until
from loratui.ui.app import LoratuiApp
from loratui.ui.widgets.modals import PromptModal

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc")


def burst(app, text: str, first: str | None = None) -> None:
    """Keys queued together, as one terminal read delivers them to a busy app (pilot.press waits after each)."""
    keys = ([(first, None)] if first else []) + [({"/": "slash", ".": "full_stop", "-": "minus", "_": "underscore",
                                                   "~": "tilde"}.get(c, c), c) for c in text]
    for key, char in keys:
        event = events.Key(key, char)
        event.set_sender(app)
        app.post_message(event)


@pytest.mark.parametrize("mode_key,open_key,screen_ready", [
    ("w", "n", lambda s: s.loaded),  # Queue: add a config or a study
    ("a", "f", lambda s: s.loaded),  # Adapters: add a folder
    (None, "ctrl+s", lambda s: s.form_ready),  # Setup: save as (typed after the default name)
])
async def test_keys_typed_right_after_a_dialog_key_land_in_the_dialog(runs, fake_core, mode_key, open_key,
                                                                       screen_ready):
    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        if mode_key:
            await pilot.press(mode_key)
        await wait_until(pilot, lambda: screen_ready(app.screen), what="screen ready")
        before = app.current_mode
        burst(app, "sample_configs/study-a.yaml", first=open_key)  # s, a, m, r, g: all screen letters elsewhere
        await wait_until(pilot, lambda: isinstance(app.screen, PromptModal), what="dialog")
        await pilot.pause()
        box = app.screen.query_one(Input)
        assert box.value.endswith("sample_configs/study-a.yaml"), box.value
        assert app.current_mode == before


async def test_the_queue_dialog_shows_an_example_and_enter_on_nothing_says_so(runs, fake_core, monkeypatch):
    """It looked prefilled (the example in the box) and Enter closed it silently, queuing nothing."""
    from loratui.core.queue import RunQueue
    from loratui.ui.screens import queue as queue_mod

    monkeypatch.setattr(queue_mod.RunQueue, "ensure_runner", lambda self, gpus: None)
    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: app.current_mode == "queue" and app.screen.loaded, what="queue")
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptModal), what="dialog")
        await pilot.pause()
        assert "e.g. sample_configs/study-lora-vs-full.yaml" in screen_text(app)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PromptModal)  # still open, and it says why
        assert "Nothing typed yet" in screen_text(app)
        config = runs / "smollm2-demo" / "config.yaml"
        await pilot.press(*str(config), "enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, PromptModal), what="dialog closed")
        await wait_until(pilot, lambda: RunQueue(runs).read().entries, what="queued")
        assert [e.state for e in RunQueue(runs).read().entries] == ["waiting"]


async def test_a_path_typed_right_after_choosing_other_file_lands_in_the_prompt(fake_core):
    """Setup's Open, 'Other file...', Enter and a path typed at once: the path's start went to the list, then to
    Setup's own keys, while the picker closed and before the prompt opened."""
    from loratui.ui.widgets.setup_modals import ConfigPicker

    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfigPicker), what="picker")
        await pilot.pause()
        await pilot.press("end")  # "Other file..."
        burst(app, "sample_configs/gpt2-qlora.yaml", first="enter")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptModal), what="path prompt")
        await pilot.pause()
        assert app.screen.query_one(Input).value == "sample_configs/gpt2-qlora.yaml"
        assert app.current_mode == "setup"
