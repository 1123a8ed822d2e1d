"""Runs screen: the table, refresh, open, copy config, resume, stop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fixtures import host_app, make_live_run, recorded_head, wait_until
from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)
from loratui.core.config import RunConfig
from loratui.ui.screens import runs as runs_screen
from loratui.ui.screens.monitor import MonitorScreen
from loratui.ui.screens.runs import RunsScreen
from loratui.ui.widgets.modals import ConfirmModal


pytestmark = pytest.mark.usefixtures("utc", "quiet_monitor")


@pytest.fixture
def runs(runs) -> Path:
    """The recorded runs plus a live one (this test process's pid) and a crashed one."""
    head = recorded_head(120)
    make_live_run(Path("runs"), "smollm2-live", pid=os.getpid(), events=head)
    make_live_run(Path("runs"), "smollm2-crashed", pid=4_194_302, events=head[:9])
    return Path("runs")


def states(screen: RunsScreen) -> dict[str, str]:
    return {s.name: s.state for s in screen.summaries}


async def test_lists_every_run_with_state(runs):
    app = host_app(lambda: RunsScreen(), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        assert states(screen) == {"smollm2-live": "running", "smollm2-crashed": "crashed",
                                  "smollm2-demo": "finished", "smollm2-stopped": "stopped",
                                  "smollm2-bs64-oom": "failed"}
        demo = next(s for s in screen.summaries if s.name == "smollm2-demo")
        assert demo.best_eval_loss == pytest.approx(1.0324) and demo.method == "lora"
        table = screen.query_one("#runs-table")
        assert table.row_count == 5
        table.focus()
        await pilot.press("end")  # End and Home: the last and the first run (DataTable's own scrolled sideways)
        assert table.cursor_row == 4
        await pilot.press("home")
        assert table.cursor_row == 0


async def test_refresh_picks_up_changes(runs, monkeypatch):
    app = host_app(lambda: RunsScreen(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        live = runs / "smollm2-live"
        with open(live / "events.jsonl", "a") as fh:
            fh.write(json.dumps({"kind": "failed", "time": 1, "error": "X", "message": "boom", "hint": "h"}) + "\n")
        status = json.loads((live / "status.json").read_text())
        (live / "status.json").write_text(json.dumps({**status, "state": "failed"}))
        await pilot.press("f5")
        await wait_until(pilot, lambda: states(screen)["smollm2-live"] == "failed", what="refresh")
        s = next(s for s in screen.summaries if s.name == "smollm2-live")
        assert s.error == "boom"


async def test_enter_opens_the_monitor(runs):
    app = host_app(lambda: RunsScreen(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        await pilot.press("down", "down", "down")  # live, crashed, stopped, demo
        assert screen.selected.name == "smollm2-demo"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.state == "finished",
                         what="monitor")
        assert app.screen.run_dir == runs / "smollm2-demo"


async def test_copy_config_into_setup(runs):
    received: list[RunConfig] = []
    app = host_app(lambda: RunsScreen(runs), open_setup_with=received.append)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        await pilot.press("down", "down", "down", "c")
        await pilot.pause()
        assert len(received) == 1
        cfg = received[0]
        assert cfg.train.max_steps == 200 and cfg.lora.target_modules == ["q_proj", "v_proj"]
        assert cfg.output.name is None  # a new run, not the old folder


async def test_resume_a_crashed_run(runs, monkeypatch):
    launched = []

    def fake_launch(run, *, resume=False, env=None):
        launched.append((run.path, resume))
        return 4242

    monkeypatch.setattr(runs_screen, "launch_detached", fake_launch)
    opened = []
    app = host_app(lambda: RunsScreen(runs), open_monitor=opened.append)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        await pilot.press("u")  # on the running one: not offered
        await pilot.pause()
        assert launched == []
        await pilot.press("down")
        assert screen.selected.state == "crashed" and screen.check_action("resume", ())
        await pilot.press("u")  # a stray letter must not start a GPU job: it asks first
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        assert launched == []
        await pilot.press("y")
        await wait_until(pilot, lambda: opened, what="monitor opened")
        assert launched == [(runs / "smollm2-crashed", True)] and opened == [runs / "smollm2-crashed"]


async def test_resume_and_stop_on_a_finished_run_say_why_not(runs, monkeypatch):
    """u and x on a finished run start and stop nothing, and say so in one line with what to do instead (QA walk:
    they did nothing at all)."""
    calls = []
    monkeypatch.setattr(runs_screen, "launch_detached", lambda *a, **k: calls.append("launch") or 1)
    monkeypatch.setattr(runs_screen, "stop_run", lambda run: calls.append("stop") or True)
    app = host_app(lambda: RunsScreen(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        await pilot.press("down", "down", "down")
        assert screen.selected.state == "finished"
        footer = {b.binding.key for b in screen.active_bindings.values() if b.binding.show}
        assert "u" not in footer and "x" not in footer  # not offered
        await pilot.press("u")
        await pilot.press("x")
        await pilot.pause()
        said = [n.message for n in app._notifications]
        assert calls == [] and len(said) == 2 and not isinstance(app.screen, ConfirmModal), said
        assert said[0].startswith("smollm2-demo finished: nothing to resume") and "c copies its config to Setup" in said[0]
        assert said[1].startswith("smollm2-demo already finished: nothing to stop") and "Adapters" in said[1]
        await pilot.press("up")  # stopped: x says u resumes it
        assert screen.selected.state == "stopped"
        await pilot.press("x")
        await pilot.pause()
        assert [n.message for n in app._notifications][-1] == "smollm2-stopped is stopped: nothing to stop (u resumes it)."


async def test_stop_asks_first(runs, monkeypatch):
    stopped = []
    monkeypatch.setattr(runs_screen, "stop_run", lambda run: stopped.append(run.path) or True)
    app = host_app(lambda: RunsScreen(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        assert screen.selected.state == "running"
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        await pilot.press("escape")
        await pilot.pause()
        assert stopped == []
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        await pilot.press("y")
        await pilot.pause()
        assert stopped == [runs / "smollm2-live"]


async def test_empty_runs_folder(tmp_path):
    app = host_app(lambda: RunsScreen(tmp_path / "nothing"))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.loaded, what="runs")
        assert app.screen.has_class("-empty")


def test_snapshot_runs(runs, snap_compare, monkeypatch):
    monkeypatch.setattr(runs_screen, "CLOCK", lambda: 1767603600.0 + 70)  # elapsed and ETA: fixed
    async def settle(pilot):
        await wait_until(pilot, lambda: pilot.app.screen.loaded, what="runs")

    assert snap_compare(host_app(lambda: RunsScreen(runs)), terminal_size=(80, 24), run_before=settle)


async def test_flow_inside_the_real_app(runs):
    """Runs -> monitor -> adapter -> merge wizard, through LoratuiApp's modes and open_* calls."""
    from loratui.ui.app import LoratuiApp
    from loratui.ui.screens.adapters import AdaptersScreen
    from loratui.ui.screens.merge import MergeScreen

    app = LoratuiApp(runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.loaded, what="runs")
        while app.screen.selected.name != "smollm2-demo":
            await pilot.press("down")
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.state == "finished",
                         what="monitor")
        await pilot.press("o")
        await wait_until(pilot, lambda: isinstance(app.screen, AdaptersScreen) and app.screen.loaded
                         and app.screen.selected.path.name == "adapter"
                         and app.screen.selected.run == "smollm2-demo", what="adapter selected")
        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(app.screen, MergeScreen), what="merge")
        assert app.screen.adapter.resolve() == (runs / "smollm2-demo" / "adapter").resolve()
        assert app.screen.base == "HuggingFaceTB/SmolLM2-135M-Instruct"
        await pilot.press("f3")  # back to the monitor, then detach to Runs
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), what="monitor again")
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), what="runs again")


async def test_a_reopened_app_says_which_run_is_training_and_m_watches_it(runs, fake_core):
    """Re-attaching from another SSH session: the app opens on Setup as always, a notification names the run whose
    engine is alive (not the crashed one), and the Monitor is already attached to it."""
    from loratui.ui.app import LoratuiApp
    from loratui.ui.screens.setup import SetupScreen

    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await wait_until(pilot, lambda: "monitor" in app._pending, what="the live run found")
        assert isinstance(app.screen, SetupScreen)
        said = [n.message for n in app._notifications]
        assert any(m.startswith("smollm2-live is training at step 120/") and "m watches it" in m for m in said), said
        await pilot.press("m")
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.view.step == 120,
                         what="the monitor on the live run")
        assert app.screen.run_dir.name == "smollm2-live"


async def test_launching_beside_a_training_run_asks_first(runs, fake_core):
    """ctrl+l while another run trains from the same runs folder: a dialog names it and says what sharing the
    machine costs; n launches nothing, y launches."""
    from loratui.ui.app import LoratuiApp

    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the question")
        assert app.screen.title_text == "smollm2-live is training"
        assert "runs both at once" in app.screen.body and "Queue" in app.screen.body
        await pilot.press("n")
        await settle(pilot)
        assert fake_core.launched == [] and not isinstance(app.screen, ConfirmModal)
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="the question again")
        await pilot.press("y")
        await wait_until(pilot, lambda: len(fake_core.launched) == 1, what="the launch")


async def test_delete_a_run_from_runs(runs):
    """Runs had no delete (a QA walk: Adapters' del removed only the adapter, the run and its checkpoints stayed):
    del asks, saying what goes, then the whole folder goes; a training run cannot be deleted."""
    app = host_app(lambda: RunsScreen(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        assert screen.selected.state == "running"
        await pilot.press("delete")  # the live run: nothing happens
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmModal) and (runs / "smollm2-live").is_dir()
        table = screen.query_one("DataTable")
        table.move_cursor(row=[s.name for s in screen.summaries].index("smollm2-stopped"))
        await pilot.pause()
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        assert app.screen.title_text == "Delete the run smollm2-stopped?"
        assert "files," in app.screen.body and "checkpoints" in app.screen.body and "cannot be undone" in app.screen.body
        await pilot.press("escape")
        await pilot.pause()
        assert (runs / "smollm2-stopped").is_dir()
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        await pilot.press("y")
        await wait_until(pilot, lambda: "smollm2-stopped" not in [s.name for s in screen.summaries], what="gone")
        assert not (runs / "smollm2-stopped").exists() and (runs / "smollm2-demo").is_dir()


def test_delete_run_refuses_a_live_run_a_queued_one_and_a_folder_that_is_no_run(runs, tmp_path):
    from loratui.core.errors import LoratuiError
    from loratui.core.queue import RunQueue
    from loratui.core.run_delete import delete_run, folder_size
    from loratui.core.runs import RunDir

    with pytest.raises(LoratuiError, match="smollm2-live is running; nothing was deleted"):
        delete_run(runs / "smollm2-live")
    cfg = RunDir(runs / "smollm2-demo").config()
    cfg.output.name = "later"
    entry = RunQueue(runs).add(cfg)
    with pytest.raises(LoratuiError, match="waits in the queue") as err:
        delete_run(runs / entry.run)
    assert "cancel it in the Queue" in err.value.hint
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"x" * 10)
    with pytest.raises(LoratuiError, match="is not a run folder"):
        delete_run(tmp_path / "photos")
    assert folder_size(tmp_path / "photos") == (1, 10) and (tmp_path / "photos" / "a.jpg").exists()
    delete_run(runs / "smollm2-demo")
    assert not (runs / "smollm2-demo").exists()


def test_a_deleted_run_leaves_the_queue_and_its_name_is_free_for_a_new_one(runs):
    """QA walk: after deleting a queued run that had finished, the Queue still listed it, and queuing its config
    again made a second row whose old twin pointed at the new folder."""
    from loratui.core.queue import RunQueue
    from loratui.core.run_delete import delete_run
    from loratui.core.runs import RunDir

    queue = RunQueue(runs)
    cfg = RunDir(runs / "smollm2-demo").config()
    cfg.output.name = "q1"
    entry = queue.add(cfg)
    with queue.edit() as state:
        state.find(entry.id).state = "finished"
    delete_run(runs / entry.run)
    assert [e.run for e in queue.read().entries] == []
    again = queue.add(cfg)
    assert again.run == entry.run and [e.run for e in queue.read().entries] == [entry.run]


async def test_m_watches_a_run_started_since_rather_than_the_ended_one(runs, fake_core):
    """With the app open on a finished run's Monitor, a run started from the CLI was not what m showed (QA walk)."""
    from loratui.ui.app import LoratuiApp

    app = LoratuiApp(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.open_monitor(runs / "smollm2-demo")
        await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.state == "finished",
                         what="the finished run")
        await pilot.press("r")
        await wait_until(pilot, lambda: app.current_mode == "runs", what="runs")
        make_live_run(runs, "zz-new", pid=os.getpid())
        await pilot.press("m")
        await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.run_dir is not None
                         and app.screen.run_dir.name == "zz-new", what="the new run watched")
        await pilot.press("r")
        await wait_until(pilot, lambda: app.current_mode == "runs", what="runs")
        await pilot.press("m")  # it trains: m stays on it
        await wait_until(pilot, lambda: app.current_mode == "monitor", what="monitor")
        assert app.screen.run_dir.name == "zz-new"


def test_the_detail_says_the_step_of_a_loss_logged_before_the_run_s_step():
    """The Monitor said 'loss 0.117@8' at step 9; the Runs detail said 'step 9/12  loss 0.1166' (QA walk)."""
    from loratui.core.protocol import RunState
    from loratui.core.runs import RunSummary
    from loratui.ui.widgets.run_rows import detail_text

    s = RunSummary(name="demo12", path=Path("runs/demo12"), state=RunState.STOPPED, step=9, max_steps=12,
                   loss=0.1166, loss_step=8)
    assert "step 9/12  loss 0.1166@8" in detail_text(s).plain
    s.loss_step = 9
    assert "loss 0.1166\n" in detail_text(s).plain  # logged at the run's own step: bare


async def test_at_80_columns_the_footer_keeps_quit_on_a_stopped_run(runs):
    """The walk read '... ? Help q Qui' on a stopped run (u shown): the footer keeps every key whole."""
    from fixtures import screen_text

    app = host_app(lambda: RunsScreen(), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        while screen.selected.state != "stopped":
            await pilot.press("down")
        footer = screen_text(app).splitlines()[-1]
        for key in ("c Copy", "u Resume", "? Help", "q Quit", "s Setup"):
            assert key in footer, footer
