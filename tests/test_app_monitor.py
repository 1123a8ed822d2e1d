"""Monitor screen: replay, live tailing, crashed/failed runs, chart speed, snapshots (its actions:
test_app_monitor_actions.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures import FixedSampler, h100_snapshot, host_app, make_live_run, recorded_events, screen_text, wait_until
from loratui.ui.screens import monitor
from loratui.ui.screens.monitor import MonitorScreen, RunUpdated
from loratui.ui.widgets.loss_chart import LossChart, downsample
from loratui.ui.widgets.run_state import RunModel, SeriesBuffer


pytestmark = pytest.mark.usefixtures("utc", "quiet_monitor")


def append(path: Path, events: list[dict]) -> None:
    with open(path, "a") as fh:
        for ev in events:
            fh.write(json.dumps(ev) + "\n")


# -- the model behind the screen ----------------------------------------------------------------------------------


def test_run_model_folds_recorded_events():
    m = RunModel()
    m.apply(recorded_events("smollm2-demo"))
    v = m.snapshot()
    assert v.lifecycle == "finished" and v.step == 200 and v.max_steps == 200
    assert v.best_eval_loss == pytest.approx(1.0324) and v.best_eval_step == 200
    assert len(v.loss_points[0]) == 40 and len(v.eval_points[0]) == 8
    assert v.adapter == "adapter" and v.runtime_s == pytest.approx(92.7, abs=0.1)
    assert v.memory["peak_allocated_gb"] == 3.21
    m2 = RunModel()
    m2.apply(recorded_events("smollm2-bs64-oom"))
    assert m2.view.lifecycle == "failed" and "out of memory" in m2.view.failure["message"]
    assert m2.view.failure["hint"].startswith("halve train.batch_size")


def test_series_buffer_bounded_and_exact_mean():
    buf = SeriesBuffer(max_points=64)
    for i in range(100_000):
        buf.append(i, 1.0 if i % 2 else 3.0)
    xs, ys = buf.points()
    assert len(xs) <= 64 and buf.count == 100_000
    assert xs[0] < xs[-1] and xs[-1] <= 99_999
    assert all(abs(y - 2.0) < 1e-9 for y in ys[:-1])


def test_eta_and_resume_keep_curve_monotonic():
    m = RunModel()
    m.apply([{"kind": "started", "time": 0, "max_steps": 100}])
    m.apply([{"kind": "step", "time": 10 * i, "step": i, "loss": 1.0} for i in range(1, 11)])
    assert m.view.eta == pytest.approx(900.0)
    m.apply([{"kind": "resumed", "time": 200, "step": 5, "checkpoint": "c"}])
    m.apply([{"kind": "step", "time": 200 + i, "step": i, "loss": 2.0} for i in range(6, 13)])
    xs, _ = m.snapshot().loss_points
    assert xs == sorted(xs) and xs[-1] == 12 and m.view.resumes == 1


def test_downsample():
    xs = list(range(1000))
    ox, oy = downsample(xs, [float(x) for x in xs], 50)
    assert len(ox) <= 50 and ox[-1] == 999 and oy[-1] == 999.0
    assert downsample([1, 2], [3, 4], 50) == ([1, 2], [3, 4])


# -- attaching ------------------------------------------------------------------------------------------------------


async def test_replays_a_finished_run_from_the_start(runs):
    flowed: list = []
    app = host_app(lambda: MonitorScreen(runs / "smollm2-demo"))
    async with app.run_test(size=(80, 24), message_hook=flowed.append) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "finished", what="finished")
        assert screen.view.step == 200 and screen.view.best_eval_loss == pytest.approx(1.0324)
        chart = screen.query_one(LossChart)
        assert len(chart.train[0]) == 40 and len(chart.eval[0]) == 8
        await wait_until(pilot, lambda: screen.log_lines, what="log")
        assert screen.log_lines[-1] == "finished in 92.7s"
        assert screen.log_lines[-3].startswith("100%|")  # tqdm carriage returns collapsed
        text = screen_text(app)
        assert "✔ finished" in text and "no NVIDIA GPU" in text and "finished in 92.7s" in text
        assert any(isinstance(m, RunUpdated) for m in flowed)
        assert not screen.check_action("stop", ()) and screen.check_action("open_adapter", ())


async def test_tails_a_growing_run_until_finished(runs):
    events = recorded_events("smollm2-demo")
    head = [e for e in events if e["kind"] in ("phase", "started")
            or e["kind"] in ("step", "eval") and e["step"] <= 50]
    run = make_live_run(runs, "live", pid=os.getpid(), events=head)
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.view.step == 50, what="step 50")
        assert screen.state == "running"
        assert screen.check_action("stop", ()) and screen.check_action("checkpoint", ())
        assert len(screen.query_one(LossChart).train[0]) == 10
        assert len(screen.query_one(LossChart).eval[0]) == 2
        bar = screen.query_one("#mon-progress")
        assert bar.total == 200 and bar.progress == 50
        assert "ETA" in screen_text(app)

        more = [e for e in events if e["kind"] in ("step", "eval", "memory") and 50 < e.get("step", 0) <= 120]
        append(run / "events.jsonl", more)
        await wait_until(pilot, lambda: screen.view.step == 120, what="step 120")
        assert len(screen.query_one(LossChart).train[0]) == 24
        assert len(screen.query_one(LossChart).eval[0]) == 4
        assert bar.progress == 120

        # a half-written line is not read until it is complete
        with open(run / "events.jsonl", "a") as fh:
            fh.write('{"kind": "step", "time": 1, "step": 125, "max_st')
        await pilot.pause(0.1)
        assert screen.view.step == 120
        with open(run / "events.jsonl", "a") as fh:
            fh.write('eps": 200, "loss": 0.9}\n')
        await wait_until(pilot, lambda: screen.view.step == 125, what="step 125")

        append(run / "events.jsonl", [{"kind": "finished", "time": time.time(), "step": 200, "adapter": "adapter",
                                       "runtime_s": 90.0, "train_loss": 1.1}])
        await wait_until(pilot, lambda: screen.state == "finished", what="finished")
        assert screen.view.step == 200 and not screen.check_action("stop", ())
        await wait_until(pilot, lambda: not screen._watching, what="watcher to end")


async def test_crashed_run(runs):
    events = [e for e in recorded_events() if e["kind"] in ("started",) or e["kind"] == "step" and e["step"] <= 40]
    run = make_live_run(runs, "crashed", pid=4_194_302, events=events)
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "crashed", what="crashed")
        text = screen_text(app)
        assert "✖ crashed" in text and "ended without a final event" in text and "resume" in text
        assert screen.view.step == 40


async def test_failed_run_shows_message_and_hint(runs):
    app = host_app(lambda: MonitorScreen(runs / "smollm2-bs64-oom"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "failed", what="failed")
        text = screen_text(app)
        assert "✖ failed" in text and "CUDA out of memory" in text and "halve train.batch_size" in text


async def test_attach_switches_runs(runs):
    app = host_app(lambda: MonitorScreen())
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert "No run attached" in screen_text(app)
        screen.attach(runs / "smollm2-bs64-oom")
        await wait_until(pilot, lambda: screen.state == "failed", what="failed")
        screen.attach(runs / "smollm2-demo")
        await wait_until(pilot, lambda: screen.state == "finished", what="finished")
        assert screen.view.step == 200 and screen.view.failure is None


# -- speed -----------------------------------------------------------------------------------------------------------


async def test_100k_step_history_is_downsampled_and_renders(runs):
    """A 100,000-step history folds into at most 512 chart points and draws (how fast: bench/, not a timed test;
    on the 2-core box about 2 s to fold once on attach and a few ms a render)."""
    events = [{"kind": "started", "time": 0.0, "max_steps": 100_000}]
    events += [{"kind": "step", "time": i * 0.1, "step": i, "max_steps": 100_000, "loss": 2 / (1 + i / 5000) + 0.1,
                "lr": 1e-4, "epoch": i / 50_000} for i in range(1, 100_001)]
    events += [{"kind": "eval", "time": i * 0.1, "step": i, "eval_loss": 2 / (1 + i / 5000) + 0.2}
               for i in range(1000, 100_001, 1000)]
    model = RunModel()
    t0 = time.perf_counter()
    model.apply(events)
    view = model.snapshot()
    fold = time.perf_counter() - t0
    assert len(view.loss_points[0]) <= 512 and len(view.eval_points[0]) == 100

    app = host_app(lambda: MonitorScreen(runs / "smollm2-demo"))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "finished" and not screen._watching, what="finished")
        chart = screen.query_one(LossChart)
        assert chart.size.width > 60 and chart.size.height > 15
        chart.render()  # warm plotext up
        timings = []
        for _ in range(5):
            t0 = time.perf_counter()
            chart.set_data(view.loss_points, view.eval_points, view.max_steps)
            chart.render()
            timings.append(time.perf_counter() - t0)
        drawn = str(chart.render())
        assert "┤" in drawn and "100000" in drawn.replace(",", "").replace("k", "000")  # axes up to the last step
        print(f"100k steps: fold {fold * 1000:.0f} ms, chart render {min(timings) * 1000:.1f} ms")


# -- snapshots -------------------------------------------------------------------------------------------------------


def _snap_app(run_dir: Path):
    return host_app(lambda: MonitorScreen(run_dir))


async def _settle(pilot, state: str) -> None:
    screen = pilot.app.screen
    await wait_until(pilot, lambda: screen.state == state and not screen._watching and screen.log_lines
                     and screen.query_one("#mon-gpu").snapshot is not None, what=state)
    await pilot.pause()


def test_snapshot_monitor_finished(runs, snap_compare):
    assert snap_compare(_snap_app(runs / "smollm2-demo"), terminal_size=(80, 24),
                        run_before=lambda pilot: _settle(pilot, "finished"))


def test_snapshot_monitor_failed(runs, snap_compare):
    assert snap_compare(_snap_app(runs / "smollm2-bs64-oom"), terminal_size=(80, 24),
                        run_before=lambda pilot: _settle(pilot, "failed"))


def test_snapshot_monitor_no_gpu_stopped(runs, snap_compare):
    assert snap_compare(_snap_app(runs / "smollm2-stopped"), terminal_size=(80, 24),
                        run_before=lambda pilot: _settle(pilot, "stopped"))


def test_snapshot_monitor_gpu_120x40(runs, snap_compare, monkeypatch):
    monkeypatch.setattr(monitor, "make_sampler", lambda pid: FixedSampler(h100_snapshot()))
    assert snap_compare(_snap_app(runs / "smollm2-demo"), terminal_size=(120, 40),
                        run_before=lambda pilot: _settle(pilot, "finished"))


# -- a resume from another process --------------------------------------------------------------------------------

RESUMER = """
import json, sys, time, pathlib, psutil
from loratui.core.identity import RunLock
run = pathlib.Path(sys.argv[-1])
lock = RunLock.acquire(run)  # as the engine does, before anything else
me = psutil.Process()
status = json.loads((run / "status.json").read_text())
status.update(state="running", pid=me.pid, pid_started=me.create_time(), cmdline=me.cmdline(), updated=time.time())
(run / "status.json").write_text(json.dumps(status))
t = time.time()
with open(run / "events.jsonl", "a") as fh:
    for ev in [{"kind": "phase", "time": t, "phase": "checking"},
               {"kind": "started", "time": t, "max_steps": 400, "resumed": True},
               {"kind": "resumed", "time": t, "step": 100, "checkpoint": "checkpoints/checkpoint-100"},
               {"kind": "step", "time": t + 0.1, "step": 105, "max_steps": 400, "loss": 1.0, "eta_s": 600.0}]:
        fh.write(json.dumps(ev) + "\\n")
print("ready", flush=True)
time.sleep(60)
"""


async def test_follows_a_resume_started_elsewhere(runs, monkeypatch):
    """Issue 9 item 3: a stopped run resumed by `loratui train --resume` in another shell shows as running again,
    without reopening the monitor; when that engine dies, the monitor says crashed."""
    monkeypatch.setattr(monitor, "IDLE_POLL_INTERVAL", 0.05)
    run = runs / "smollm2-stopped"
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "stopped" and not screen._watching, what="stopped")
        assert "■ stopped at step 120" in screen_text(app)
        # another shell: `loratui train --resume runs/smollm2-stopped` (a stand-in writing what the engine writes)
        proc = subprocess.Popen([sys.executable, "-c", RESUMER, "loratui", "train", "--resume", str(run)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            await wait_until(pilot, lambda: screen.state == "running" and screen.view.step == 105, what="resumed")
            assert screen._watching and screen.view.resumes == 1
            text = screen_text(app)
            assert "■ stopped" not in text and "step 105/400" in text and "ETA" in text
            assert screen.check_action("stop", ())
        finally:
            proc.kill()
            proc.wait()
        await wait_until(pilot, lambda: screen.state == "crashed", what="crashed after the engine died")


async def test_time_and_eta_tick_between_steps(runs, monkeypatch):
    """Issue 9 item 4: the elapsed time (and the ETA) move while a step takes long, without new events."""
    monkeypatch.setattr(monitor, "TICK_INTERVAL", 0.05)
    t = time.time()
    events = [{"kind": "started", "time": t - 60, "max_steps": 100},
              {"kind": "step", "time": t - 50, "step": 1, "max_steps": 100, "loss": 2.0},
              {"kind": "step", "time": t - 40, "step": 2, "max_steps": 100, "loss": 1.9}]
    run = make_live_run(runs, "slow-steps", pid=os.getpid(), events=events)
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "running" and screen.view.step == 2, what="running")
        first = screen.view
        assert first.elapsed >= 60 and first.eta is not None
        await wait_until(pilot, lambda: screen.view.elapsed >= first.elapsed + 1.0, timeout=5, what="the clock")
        assert screen.view.eta < first.eta and screen.view.events == first.events


# -- a run on several cards (issue 7) -------------------------------------------------------------------------------


def _multi_runs(tmp_path, monkeypatch) -> Path:
    from fixtures import MULTI_RUNS, copy_runs

    monkeypatch.chdir(tmp_path)
    return copy_runs(tmp_path, source=MULTI_RUNS)


def test_two_rank_run_folds_world_and_batch():
    from fixtures import MULTI_RUNS

    m = RunModel()
    m.apply([json.loads(line) for line in (MULTI_RUNS / "smollm2-ddp2" / "events.jsonl").read_text().splitlines()])
    v = m.snapshot()
    assert (v.world_size, v.distributed, v.effective_batch) == (2, "ddp", 16)
    assert [g["index"] for g in v.gpus] == [0, 1]
    from loratui.ui.widgets.monitor_text import side_title

    assert side_title(v) == "GPU · DDP x 2 · batch 16"


async def test_monitor_shows_every_card_and_rank_of_a_two_rank_run(tmp_path, monkeypatch):
    """4 cards on the box, the run on 0 and 1: both shown (2 lines each), a row per rank with its process memory,
    the other cards left out; the side panel's title says DDP x 2 and the effective batch."""
    from fixtures import multi_gpu_snapshot

    runs = _multi_runs(tmp_path, monkeypatch)
    snap = multi_gpu_snapshot(4, ranks={201: 0, 202: 1})
    monkeypatch.setattr(monitor, "make_sampler", lambda pid: FixedSampler(snap))
    app = _snap_app(runs / "smollm2-ddp2")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, "finished")
        screen = app.screen
        text = screen_text(app)
        assert screen.query_one("#mon-side").border_title == "GPU · DDP x 2 · batch 16"
        assert "DDP x 2 · batch 16" in screen.query_one("#mon-title").render().plain
        assert "GPU 0 H100 80GB HBM3" in text and "GPU 1 H100 80GB HBM3" in text
        assert "GPU 2" not in text and "+2 more GPUs visible" in text
        assert "rank 0" in text and "11.5/80.0 GiB" in text
        assert "rank 1" in text and "12.5/80.0 GiB" in text
        assert "97%" in text and "96%" in text


async def test_monitor_lists_the_started_cards_before_any_rank_holds_memory(tmp_path, monkeypatch):
    """No rank process on the cards (the run ended, or ranks not yet on the GPU): the started event's cards, each
    with its memory."""
    from fixtures import multi_gpu_snapshot

    runs = _multi_runs(tmp_path, monkeypatch)
    monkeypatch.setattr(monitor, "make_sampler", lambda pid: FixedSampler(multi_gpu_snapshot(4)))
    app = _snap_app(runs / "smollm2-ddp2")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, "finished")
        text = screen_text(app)
        assert "GPU 0 H100" in text and "GPU 1 H100" in text and "GPU 3" not in text
        assert text.count("mem ") >= 2 and "rank 0" not in text


def test_snapshot_monitor_two_ranks_80x24(tmp_path, monkeypatch, snap_compare):
    from fixtures import multi_gpu_snapshot

    runs = _multi_runs(tmp_path, monkeypatch)
    snap = multi_gpu_snapshot(4, ranks={201: 0, 202: 1})
    monkeypatch.setattr(monitor, "make_sampler", lambda pid: FixedSampler(snap))
    assert snap_compare(_snap_app(runs / "smollm2-ddp2"), terminal_size=(80, 24),
                        run_before=lambda pilot: _settle(pilot, "finished"))


async def test_eight_ranks_take_a_line_a_card(tmp_path, monkeypatch):
    """8 cards: one line a card (utilisation, rank, memory), so the lr sparkline still shows at 80x24."""
    from fixtures import multi_gpu_snapshot

    runs = _multi_runs(tmp_path, monkeypatch)
    snap = multi_gpu_snapshot(8, ranks={300 + r: r for r in range(8)})
    monkeypatch.setattr(monitor, "make_sampler", lambda pid: FixedSampler(snap))
    app = _snap_app(runs / "smollm2-ddp2")
    async with app.run_test(size=(80, 24)) as pilot:
        await _settle(pilot, "finished")
        text = screen_text(app)
        for r in range(8):
            assert f"GPU {r}  {97 - r}% rank {r} {11.5 + r:.1f}/80 GiB" in text
        assert "lr 0 " in text and "▁▁▁" in text


async def test_the_final_evaluation_says_so_instead_of_eta_0(runs):
    """Issue 19 item 15: during the closing evaluation the Monitor says 'final eval: N examples' (whole at 80
    columns), not ETA 0:00."""
    t = time.time()
    events = [{"kind": "started", "time": t - 60, "max_steps": 10, "eval_examples": 16, "final_eval_examples": 80},
              *[{"kind": "step", "time": t - 50 + i, "step": i, "max_steps": 10, "loss": 1.0, "eta_s": 10 - i}
                for i in range(1, 11)],
              {"kind": "phase", "time": t - 30, "phase": "final eval: 80 examples"}]
    run = make_live_run(runs, "closing", pid=os.getpid(), events=events)
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.state == "running", what="running")
        await pilot.pause()
        text = screen_text(app)
        assert "final eval: 80 examples" in text and "ETA" not in text
