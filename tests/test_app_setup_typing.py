"""Keys typed in a burst into a Setup field (over SSH, or while the box is busy) land in the order typed: the field's
own editing keys (backspace, arrows, home, end) are not overtaken by the characters after them."""

from __future__ import annotations

import time

from textual import events

from loratui.ui.app import LoratuiApp
from loratui.ui.screens.setup import SetupScreen

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)


async def test_a_burst_of_edits_and_characters_keeps_its_order(fake_core, monkeypatch):
    checks = SetupScreen.after_change

    def busy(self):  # each keystroke's checks as slow as on a loaded 2-core box
        time.sleep(0.03)
        return checks(self)

    monkeypatch.setattr(SetupScreen, "after_change", busy)
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        alpha = app.screen.field("lora.alpha").control
        alpha.focus()
        await pilot.pause()
        burst = ["end", "backspace", "backspace", *"1234567890", "home", "delete", "right", "backspace"]
        for key in burst:  # as a terminal delivers a burst: all queued before any is handled
            app.post_message(events.Key(key, key if len(key) == 1 else None))
        await settle(pilot)
        assert alpha.value == "34567890"  # '16' cleared, '1234567890' typed, its first two removed
        assert app.screen.values["lora"]["alpha"] == 34567890  # and the form holds what the field shows
