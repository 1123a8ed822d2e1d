"""One run, one set of numbers (issue 19 item 9): a stopped-and-resumed run's active time, wall time and tokens/s
read the same in Monitor, Runs, Compare, the Queue and ``loratui runs``, written by the one formatter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import screen_text, wait_until
from loratui.core.config import RunConfig
from loratui.core.runs import RunDir, summarize
from loratui.ui.app import LoratuiApp

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc", "quiet_monitor")

T = 1_700_000_000.0


def resumed_run(runs: Path) -> RunDir:
    """110 s of training, a pause of 81 minutes, 110 s more. The second engine process is twice as fast and counts
    its tokens from zero; every step claims 999 tok/s (an interval's rate), which is no run's throughput."""
    run = RunDir(runs / "resumed")
    run.path.mkdir(parents=True)
    cfg = pinned_config()
    cfg.output.name = "resumed"
    cfg.save(run.config_path)
    evs = [{"kind": "started", "time": T, "max_steps": 20},
           *[{"kind": "step", "time": T + 10 * i, "step": i, "max_steps": 20, "loss": 1.0, "elapsed": 10 * i,
              "tokens_seen": 1000 * i, "tokens_per_s": 999.0} for i in range(1, 11)],
           {"kind": "stopped", "time": T + 110, "step": 10},
           {"kind": "started", "time": T + 5000, "max_steps": 20, "resumed": True},
           {"kind": "resumed", "time": T + 5001, "step": 10},
           *[{"kind": "step", "time": T + 5000 + 10 * (i - 10), "step": i, "max_steps": 20, "loss": 0.5,
              "elapsed": 10 * (i - 10), "tokens_seen": 2000 * (i - 10), "tokens_per_s": 999.0} for i in range(11, 21)],
           {"kind": "eval", "time": T + 5105, "step": 20, "eval_loss": 0.4},
           {"kind": "finished", "time": T + 5110, "step": 20, "runtime_s": 109.0}]
    run.events_path.write_text("".join(json.dumps(e) + "\n" for e in evs))
    run.status_path.write_text(json.dumps({"state": "finished", "pid": 4_194_301, "started": T + 5000,
                                           "ended": T + 5110}))
    queue = runs / ".queue"
    queue.mkdir(parents=True, exist_ok=True)
    (queue / "queue.json").write_text(json.dumps({"entries": [  # the runner's own clock: 3 s either side
        {"id": "q0001", "run": "resumed", "state": "finished", "added": T - 10, "started": T - 3,
         "ended": T + 5113}], "next_id": 2}))
    return run


def test_the_fold_defines_each_number_once(runs):
    s = summarize(resumed_run(runs))
    assert s.elapsed == pytest.approx(220)  # active: both parts, the pause left out
    assert s.wall == pytest.approx(5110)  # first event to last, the pause included
    assert s.tokens_per_s == pytest.approx((9000 + 18000) / (90 + 90))  # tokens over training seconds


async def test_monitor_runs_compare_queue_and_the_cli_agree(runs, fake_core, capsys):
    resumed_run(runs)
    active, wall, rate = "3:40", "1:25:10", "150"
    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_monitor(runs / "resumed")
        await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.state == "finished",
                         what="monitor")
        text = screen_text(app)
        assert f"tok/s {rate}" in text and f"time {active}" in text and f"finished in {active}" in text

        await pilot.press("r")
        await wait_until(pilot, lambda: app.current_mode == "runs" and app.screen.loaded, what="runs")
        while app.screen.selected.name != "resumed":
            await pilot.press("down")
        await pilot.pause()
        assert f"time {active}" in screen_text(app)

        app.open_compare(runs=[runs / "resumed"])
        await wait_until(pilot, lambda: app.current_mode == "compare" and app.screen.loaded, what="compare")
        lines = screen_text(app).splitlines()
        app.screen.query_one("DataTable").focus()
        await pilot.press(*["down"] * 20)  # 80x24: the table scrolls under the chart
        lines += screen_text(app).splitlines()
        assert any("active time" in ln and active in ln for ln in lines), lines
        assert any("wall time" in ln and wall in ln for ln in lines), lines
        assert any("tokens/s" in ln and f" {rate} " in f"{ln} " for ln in lines), lines

        await pilot.press("w")
        await wait_until(pilot, lambda: app.current_mode == "queue" and app.screen.loaded, what="queue")
        row = next(ln for ln in screen_text(app).splitlines() if "resumed" in ln)
        assert active in row, row  # not the runner's 1:26:56 from its own clock

    from loratui.cli import main as cli_main

    assert cli_main(["runs", "--runs-dir", str(runs)]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("resumed"))
    assert active in row, row


async def test_a_running_runs_time_ticks_the_same_in_monitor_and_compare(runs, fake_core):
    """Walking the demo: Monitor said 'time 8:22' while Compare said 'active time 6:55' (its last event's)."""
    import os
    import time

    from fixtures import make_live_run

    start = time.time() - 300
    events = [{"kind": "started", "time": start, "max_steps": 30},
              {"kind": "step", "time": start + 200, "step": 3, "max_steps": 30, "loss": 1.0, "elapsed": 190}]
    make_live_run(runs, "live", pid=os.getpid(), events=events)

    def seconds(text: str) -> int:
        m, s = text.split(":")[-2:]
        return int(m) * 60 + int(s)

    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_monitor(runs / "live")
        await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.state == "running",
                         what="monitor")
        line = next(ln for ln in screen_text(app).splitlines() if " time " in ln)
        monitor = seconds(line.split(" time ")[1].split()[0])
        app.open_compare(runs=[runs / "live"])
        await wait_until(pilot, lambda: app.current_mode == "compare" and app.screen.loaded, what="compare")
        line = next(ln for ln in screen_text(app).splitlines() if "active time" in ln)
        compare = seconds(line.split("active time")[1].split()[0])
        assert monitor >= 299 and abs(compare - monitor) <= 3, (monitor, compare)  # now, not the last event's 200


def test_a_classifier_s_best_is_its_accuracy_in_runs_as_in_the_cli():
    """The Runs screen showed a classifier's eval loss (1.006) where loratui runs shows 'acc 0.610' (a QA walk)."""
    from loratui.core.run_summary import RunSummary
    from loratui.ui.widgets.run_rows import row_cells

    s = RunSummary(name="cls", best_accuracy=0.61, best_eval_loss=1.006)
    assert row_cells(s)[5] == "acc 0.610"
    assert row_cells(RunSummary(name="lm", best_eval_loss=1.0324))[5] == "1.032"



async def test_a_classifier_s_accuracy_is_whole_in_the_runs_table(tmp_path):
    """At 80x24 the Best column (6 wide) cut 'acc 0.993' to 'a….993' (a QA walk); it is as wide as its cells, up
    to 9, so a table of language-model runs keeps its width."""
    from loratui.core.run_summary import RunSummary
    from loratui.ui.widgets.run_rows import COLUMNS, row_cells
    from loratui.ui.widgets.tables import fill_table
    from textual.app import App
    from textual.widgets import DataTable

    class One(App):
        def compose(self):
            yield DataTable()

    app = One()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(DataTable)
        runs = [RunSummary(name="cls-r4", best_accuracy=0.993), RunSummary(name="lm", best_eval_loss=1.0324)]
        fill_table(table, list(COLUMNS), [row_cells(s) for s in runs], ["a", "b"], flex="name")
        await pilot.pause()
        assert str(table.get_cell("a", "eval")) == "acc 0.993"
        fill_table(table, list(COLUMNS), [row_cells(runs[1])], ["b"], flex="name")
        await pilot.pause()
        assert table.columns["eval"].width == len("1.032")  # as wide as its cells


def test_the_queue_s_scores_give_a_classifier_its_accuracy():
    """The Queue's detail line showed a classifier's loss and eval loss but not its accuracy (a QA walk)."""
    from loratui.core.preference import scores_text
    from loratui.core.run_summary import RunSummary

    s = RunSummary(name="cls", loss=0.6191, eval_metrics={"eval_loss": 0.6355}, best_accuracy=0.7333)
    assert scores_text(s) == "loss 0.6191 · eval 0.6355 · acc 0.733"
    assert scores_text(RunSummary(name="lm", loss=1.2)) == "loss 1.2000"
