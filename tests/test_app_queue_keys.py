"""The Queue's keys (issue 19 item 8): K and J move a waiting run, the highlight goes with it, and '#' is the order
the runner follows."""

from __future__ import annotations

import pytest

from fixtures import screen_text, wait_until
from loratui.ui.app import LoratuiApp

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc")


async def test_queue_k_and_j_move_the_run_and_the_highlight_goes_with_it(runs, fake_core):
    """Issue 19 item 8: after K the highlight stayed on the row (now another run), and '#' read 5 above 4."""
    import json

    from loratui.core.queue import RunQueue

    queue = runs / ".queue"
    queue.mkdir(parents=True, exist_ok=True)
    (queue / "queue.json").write_text(json.dumps({"entries": [
        {"id": f"q000{i}", "run": f"run-{i}", "state": "waiting", "added": 1000.0 + i} for i in range(1, 6)],
        "next_id": 6}))
    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await wait_until(pilot, lambda: app.current_mode == "queue" and app.screen.loaded, what="queue")
        screen = app.screen
        await pilot.press(*["down"] * 4)  # run-5
        await wait_until(pilot, lambda: screen.selected.run == "run-5", what="cursor on run-5")
        await pilot.press("K", "K")
        await wait_until(pilot, lambda: [e.run for e in screen.entries][2] == "run-5", what="moved up twice")
        await pilot.pause()
        assert screen.selected.run == "run-5"  # the highlight went with it
        rows = [ln for ln in screen_text(app).splitlines() if "run-" in ln and "waiting" in ln]
        assert [ln.split()[0] for ln in rows] == ["1", "2", "3", "4", "5"]  # '#' is the order
        assert [ln.split()[2] for ln in rows] == ["run-1", "run-2", "run-5", "run-3", "run-4"]
        await pilot.press("J")
        await wait_until(pilot, lambda: [e.run for e in screen.entries][3] == "run-5", what="moved down")
        await pilot.pause()
        assert screen.selected.run == "run-5"
        assert [e.run for e in RunQueue(runs).read().entries] == ["run-1", "run-2", "run-3", "run-5", "run-4"]
