"""The Monitor shows a run's alerts in place (issue 18): how many, and the newest, under its state's banner."""

from __future__ import annotations

from loratui.ui.widgets.monitor_text import banner_text
from loratui.ui.widgets.run_state import RunView

ROLLBACK = {"step": 7, "alert": "rollback",
            "message": "training diverged at step 5: rolled back to checkpoint-4, learning rate 0.0025 (x0.5)"}
SKIPPED = {"step": 5, "alert": "skipped", "message": "step 5: the loss or gradients are not finite, the update was "
                                                     "skipped (1 of 3 bad logged steps in a row stop the run)"}


def test_a_running_run_with_alerts_shows_them_and_one_without_shows_nothing():
    text, kind = banner_text(RunView(alerts=[SKIPPED]), "running", 123, False)
    assert kind == "warn" and str(text).startswith("⚠ 1 alert · step 5: the loss or gradients are not finite")
    assert banner_text(RunView(), "running", 123, False) == ("", "")


def test_a_finished_run_keeps_its_banner_and_adds_the_newest_alert():
    text, kind = banner_text(RunView(alerts=[SKIPPED, SKIPPED, ROLLBACK], adapter="/x"), "finished", None, False)
    first, second = str(text).split("\n", 1)
    assert kind == "ok" and first.startswith("✔ finished")
    assert second == "⚠ 3 alerts · " + ROLLBACK["message"]


def test_a_failed_run_says_why_it_failed_not_its_alerts():
    v = RunView(alerts=[SKIPPED], failure={"error": "Diverged", "message": "training diverged at step 5"})
    text, kind = banner_text(v, "failed", None, False)
    assert kind == "error" and "⚠" not in str(text)


def test_a_loss_logged_steps_ago_says_its_step():
    """QA walk: with logging_steps 5, the finished run's header read 'step 8/8 · loss 0.160', step 5's loss unmarked
    (Adapters' detail said '(at step 5)')."""
    from loratui.ui.widgets.monitor_text import stats_text
    from loratui.ui.widgets.run_state import RunModel

    model = RunModel()
    model.apply([{"kind": "started", "time": 1.0, "max_steps": 8, "method": "lora"},
                 {"kind": "step", "time": 2.0, "step": 5, "loss": 0.16}])
    assert "loss 0.160" in stats_text(model.snapshot(), "running").plain
    assert "@" not in stats_text(model.snapshot(), "running").plain.split("·")[0]
    model.apply([{"kind": "step", "time": 3.0, "step": 8}])
    assert "loss 0.160@5" in stats_text(model.snapshot(), "running").plain
