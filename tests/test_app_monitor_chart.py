"""The Monitor's chart and lr panel (issue 19 item 4): the legend never covers the base model's step-0 evaluation,
the plot keeps off its box's border, and the lr panel draws the planned schedule with a marker at the current step
(it stretched the logged history across its width: at step 1, a full bar)."""

from __future__ import annotations

import os

import pytest

from fixtures import host_app, make_live_run, screen_text, wait_until
from loratui.ui.screens.monitor import MonitorScreen

pytestmark = pytest.mark.usefixtures("utc", "quiet_monitor")

T = 1_700_000_000.0


def early_run(runs):
    """Step 1 of 30 of the demo config (cosine, peak 2e-4), the base model evaluated first: the highest loss."""
    events = [{"kind": "started", "time": T, "max_steps": 30, "model": "smollm2-135m-instruct", "method": "lora"},
              {"kind": "eval", "time": T + 5, "step": 0, "eval_loss": 3.2},
              {"kind": "step", "time": T + 10, "step": 1, "max_steps": 30, "loss": 2.9, "lr": 2e-4},
              {"kind": "step", "time": T + 15, "step": 2, "max_steps": 30, "loss": 2.1, "lr": 1.99e-4}]
    return make_live_run(runs, "early", pid=os.getpid(), events=events)


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_the_step_0_evaluation_shows_and_the_lr_panel_draws_the_plan(runs, size):
    app = host_app(lambda: MonitorScreen(early_run(runs)), runs_dir=runs)
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.view.step == 2, what="two steps")
        await pilot.pause()
        lines = screen_text(app).splitlines()
        top = next(i for i, ln in enumerate(lines) if "┤" in ln and "3.2" in ln.split("┤")[0])
        assert "●" in lines[top].split("┤")[1][:4], lines[top]  # the base model's point, top left, not hidden
        assert any("loss: ⢕ train ● eval" in ln and "╭" in ln for ln in lines)  # the legend: in the border
        frame = next(ln for ln in lines if "┘" in ln)
        assert frame.split("┘")[1].startswith(" "), frame  # the plot's frame keeps off the box's border
        if size[1] < 24:
            return  # 60x20: the side panel has no room left for the lr panel
        label = next(i for i, ln in enumerate(lines) if "cosine plan" in ln)
        plan = lines[label + 1].split("│")[-2].strip() if "│" in lines[label + 1] else lines[label + 1].strip()
        assert plan[0] == "█" and plan[-1] == "▁" and len(set(plan)) >= 5, plan  # the whole cosine, not a bar
        row = screen.query_one("#mon-lr").render()
        marked = [i for i, span in enumerate(row.spans) if "reverse" in str(span.style)]
        assert marked == [round(2 / 30 * (len(row.plain) - 1))]  # step 2 of 30: the marker near the start


def test_the_planned_schedule_follows_the_trainer():
    """The recorded demo's logged learning rates are the plan's (cosine, 200 steps), and warm-up ramps."""
    import json

    from fixtures import RUNS
    from loratui.core.runs import RunDir
    from loratui.core.schedule import lr_factor, planned_lr, warmup_steps

    run = RunDir(RUNS / "smollm2-demo")
    train = run.config().train.model_dump()
    steps = [e for e in map(json.loads, run.events_path.read_text().splitlines()) if e["kind"] == "step"]
    for e in steps:
        assert train["lr"] * lr_factor(train["scheduler"], e["step"], 200, 0) == pytest.approx(e["lr"], rel=1e-6)
    ramp = {"lr": 1e-3, "scheduler": "linear", "warmup_ratio": 0.1}
    assert warmup_steps(ramp, 100) == 10
    plan = dict(planned_lr(ramp, 100, 11))
    assert plan[0] == 0 and plan[10] == pytest.approx(1e-3) and plan[100] == pytest.approx(0)
    # roll-backs (train.on_diverge): to step 60 at x0.5, then again to step 40 at x0.25: from 40 on, x0.25
    cut = dict(planned_lr(ramp, 100, 11, [(60, 0.5), (40, 0.25)]))
    assert cut[30] == pytest.approx(plan[30]) and cut[40] == pytest.approx(plan[40] * 0.25)
    assert cut[70] == pytest.approx(plan[70] * 0.25)
    cut = dict(planned_lr(ramp, 100, 11, [(40, 0.5), (60, 0.25)]))  # the second went back less far
    assert cut[50] == pytest.approx(plan[50] * 0.5) and cut[60] == pytest.approx(plan[60] * 0.25)


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_the_log_pane_wraps_a_long_line_instead_of_cutting_it(runs, size):
    """Issue 19 item 5: 'finished at step 30: saved to' never showed the path."""
    path = "/home/ana/loratui-runs/smollm2-135m-instruct-lora-20261204-0912/adapter"
    run = runs / "smollm2-demo"
    with open(run / "engine.log", "a") as fh:
        fh.write(f"finished at step 30: saved to {path}\n")
    app = host_app(lambda: MonitorScreen(run), runs_dir=runs)
    async with app.run_test(size=size) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "finished" and screen.log_lines, what="log")
        await pilot.pause()
        rows = screen_text(app).splitlines()[-6:-1]  # the pane's rows (the footer below)
        joined = "".join("".join(ln.split()) for ln in rows)
        assert "".join(f"finished at step 30: saved to {path}".split()) in joined, rows


async def test_the_newest_log_row_shows_under_a_tall_banner(runs):
    """A failed run's banner took the rows the log needed: its newest row went under the footer."""
    app = host_app(lambda: MonitorScreen(runs / "smollm2-bs64-oom"), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "failed" and screen.log_lines, what="log")
        await pilot.pause()
        assert "1.06 GiB free)" in screen_text(app).splitlines()[-2]  # the row above the footer


def stopped_at_8(runs, *, live: bool):
    """Steps logged at 2, 4 and 6 (epoch 0.02 a step... 0.06), stopped at 8 while 'saving' was the phase."""
    events = [{"kind": "started", "time": T, "max_steps": 30},
              *[{"kind": "step", "time": T + i, "step": i, "max_steps": 30, "loss": 1.0, "epoch": i / 100}
                for i in (2, 4, 6)],
              {"kind": "phase", "time": T + 8, "phase": "saving"},
              {"kind": "stopped", "time": T + 9, "step": 8}]
    return make_live_run(runs, "stopped8", pid=os.getpid() if live else 4_194_301, events=events)


async def test_after_a_stop_the_step_line_is_the_stops_and_a_resume_starts_clean(runs):
    """Issue 19 item 15: 'step 8/30 · epoch 0.06' (the epoch of step 6) after a stop; 'starting … saving…' after a
    resume (the stopped part's phase)."""
    app = host_app(lambda: MonitorScreen(stopped_at_8(runs, live=True)), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "starting", what="a new engine starting")
        await pilot.pause()
        line = next(ln for ln in screen_text(app).splitlines() if "step 8/30" in ln)
        assert "epoch 0.08" in line and "saving" not in line, line


async def test_with_no_run_attached_the_monitor_offers_no_detach(runs):
    """Issue 19 item 18: 'd Detach' showed with nothing attached."""
    app = host_app(lambda: MonitorScreen(None), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        footer = screen_text(app).splitlines()[-1]
        assert "No run attached" in screen_text(app) and "Detach" not in footer, footer
        app.screen.attach(runs / "smollm2-demo")
        await wait_until(pilot, lambda: app.screen.state == "finished", what="attached")
        assert "d Detach" in screen_text(app).splitlines()[-1]


async def test_the_base_models_evaluation_alone_is_drawn_on_a_range_around_it(runs):
    """Before the first step only the base model's evaluation is known: one point, which plotext spans from half
    its value to one and a half (from -1 to 1 for a 0). The loss axis keeps a little either side of it."""
    from loratui.ui.widgets.loss_chart import LossChart

    events = [{"kind": "started", "time": T, "max_steps": 30, "model": "smollm2-135m-instruct", "method": "lora"},
              {"kind": "eval", "time": T + 5, "step": 0, "eval_loss": 3.2}]
    app = host_app(lambda: MonitorScreen(make_live_run(runs, "base-eval", pid=os.getpid(), events=events)),
                   runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.screen.query_one(LossChart)
        await wait_until(pilot, lambda: chart.eval[0], what="the base model's evaluation")
        await pilot.pause()
        lines = screen_text(app).splitlines()
    ticks = [float(ln.split("┤")[0].split("│")[-1]) for ln in lines if "┤" in ln]
    assert len(ticks) >= 2 and all(2.8 <= t <= 3.6 for t in ticks), ticks
