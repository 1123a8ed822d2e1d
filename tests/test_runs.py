"""Run folders as users meet them: stop signals only the run's own engine, broken runs never break a listing,
names stay inside the runs folder, the launcher writes launch.json and the engine alone status.json."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fixtures import copy_runs
from loratui.cli import main
from loratui.core import runs
from loratui.core.config import RunConfig, load_config
from loratui.core.errors import RunError
from loratui.core.protocol import RunState

# a stand-in engine: its command line reads "... loratui engine RUN", it holds the run's lock as an engine does;
# SIGTERM writes a flag file and exits
STANDIN = """
import pathlib, signal, sys, time
from loratui.core.identity import RunLock
lock = RunLock.acquire(pathlib.Path(sys.argv[-1]))
flag = pathlib.Path(sys.argv[-1] + ".signals")
signal.signal(signal.SIGTERM, lambda *a: (flag.write_text("SIGTERM"), sys.exit(0)))
signal.signal(signal.SIGUSR1, lambda *a: flag.write_text("SIGUSR1"))
print("ready", flush=True)
time.sleep(60)
"""


def spawn(args: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    return proc


def standin(run_dir: Path, *prefix: str) -> subprocess.Popen:
    proc = spawn([sys.executable, "-c", STANDIN, *prefix, "loratui", "engine", str(run_dir)])
    assert proc.stdout.readline().strip() == "ready"
    return proc


def make_run(root: Path, name: str = "r", **status) -> runs.RunDir:
    run = runs.RunDir(root / name)
    run.path.mkdir(parents=True)
    cfg = RunConfig()
    cfg.output.name = name
    cfg.save(run.config_path)
    run.events_path.write_text(json.dumps({"kind": "started", "time": 1.0, "max_steps": 10, "model": "m",
                                           "method": "lora"}) + "\n")
    if status:
        run.status_path.write_text(json.dumps(status))
    return run


# -- stop and checkpoint-now signal only the run's own engine ---------------------------------------------------------


def test_pid_minus_one_is_not_running_and_nothing_is_signalled(tmp_path, capsys):
    run = make_run(tmp_path, state="running", pid=-1, pid_started=None)
    assert run.state() == RunState.CRASHED
    assert runs.stop_run(run) is False and runs.request_checkpoint(run) is False
    assert main(["stop", str(run.path)]) == 2
    assert "is not running (state: crashed)" in capsys.readouterr().err
    for pid in (0, 1, "1234", True, None):
        run.status_path.write_text(json.dumps({"state": "running", "pid": pid}))
        assert runs.stop_run(run) is False


def test_a_reused_pid_is_not_the_engine_and_survives(tmp_path, procs):
    sleeper = spawn(["sleep", "30"])
    procs.append(sleeper)
    started = psutil.Process(sleeper.pid).create_time()
    # the pid and even its start time match, but the command line is not this run's engine
    run = make_run(tmp_path, state="running", pid=sleeper.pid, pid_started=started)
    assert runs.stop_run(run) is False and runs.request_checkpoint(run) is False
    assert run.state() == RunState.CRASHED
    # no start time recorded (an old status.json): still refused
    run.status_path.write_text(json.dumps({"state": "running", "pid": sleeper.pid}))
    assert runs.stop_run(run) is False
    # a start time that does not match: refused even with a recorded command line that matches
    run.status_path.write_text(json.dumps({"state": "running", "pid": sleeper.pid, "pid_started": started - 100,
                                           "cmdline": ["sleep", "30"]}))
    assert runs.stop_run(run) is False
    time.sleep(0.2)
    assert sleeper.poll() is None  # the unrelated process lives


def test_the_proven_engine_is_signalled(tmp_path, procs):
    run = make_run(tmp_path)
    proc = standin(run.path)
    procs.append(proc)
    run.status_path.write_text(json.dumps({"state": "running", "pid": proc.pid,
                                           "pid_started": psutil.Process(proc.pid).create_time()}))
    assert run.state() == RunState.RUNNING
    flag = Path(str(run.path) + ".signals")
    assert runs.request_checkpoint(run)
    deadline = time.monotonic() + 10
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.read_text() == "SIGUSR1" and proc.poll() is None
    assert runs.stop_run(run)
    assert proc.wait(timeout=10) == 0 and flag.read_text() == "SIGTERM"


def test_command_lines_that_name_the_engine(tmp_path):
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    yes = [
        [sys.executable, "-m", "loratui", "engine", str(run)],
        [sys.executable, "-m", "loratui", "engine", str(run), "--resume"],
        ["/venv/bin/loratui", "engine", str(run)],
        ["/venv/bin/loratui", "train", "--resume", str(run)],
        ["torchrun", "--nproc-per-node", "2", "-m", "loratui", "engine", str(run)],
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "loratui", "engine", "runs/a"],
    ]
    no = [
        ["sleep", "30"],
        [sys.executable, "-m", "loratui", "engine", str(tmp_path / "runs" / "b")],
        ["/venv/bin/loratui", "runs"],
        ["vim", "loratui", str(run)],
        [],
    ]
    for cmd in yes:
        assert runs.names_run(cmd, run, cwd=str(tmp_path)), cmd
    for cmd in no:
        assert not runs.names_run(cmd, run, cwd=str(tmp_path)), cmd


# -- the launcher writes launch.json; the engine alone writes status.json ----------------------------------------------


def test_launch_records_what_it_started_and_the_app_can_attach_at_once(tmp_path, monkeypatch, procs):
    run = make_run(tmp_path)
    run.events_path.unlink()
    monkeypatch.setattr(runs, "engine_command",
                        lambda r, resume=False, processes=1: [sys.executable, "-c", STANDIN, "loratui", "engine",
                                                               str(r.path)])
    pid = runs.launch_detached(run)
    procs.append(_Adopt(pid))
    launch = json.loads(run.launch_path.read_text())
    assert launch["pid"] == pid and launch["cmdline"][-3:] == ["loratui", "engine", str(run.path)]
    assert abs(launch["pid_started"] - psutil.Process(pid).create_time()) < 1e-3
    assert not run.status_path.exists()  # not the launcher's to write
    assert run.state() == RunState.STARTING
    assert runs.stop_run(run)  # proven through launch.json
    psutil.Process(pid).wait(timeout=10)
    # stopped before announcing anything (x while it read 'starting'): it read 'waiting' for good (QA walk)
    assert run.state() == RunState.STOPPED
    run.stop_path.unlink()
    assert run.state() == RunState.CRASHED  # launched and gone without a word, no stop asked: its log says why
    run.launch_path.unlink()
    assert run.state() == RunState.WAITING  # never launched (a queued run)


class _Adopt:
    """A launched pid, killed at the end of the test if still alive."""

    def __init__(self, pid: int):
        self.pid = pid

    def poll(self):
        return None if psutil.pid_exists(self.pid) else 0

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self):
        try:
            psutil.Process(self.pid).wait(timeout=5)
        except psutil.Error:
            pass


def test_create_run_writes_no_status(tmp_path):
    cfg = RunConfig()
    cfg.output.name = "fresh"
    run = runs.create_run(cfg, tmp_path / "runs")
    assert run.config_path.is_file() and not run.status_path.exists()
    assert run.state() == RunState.WAITING


# -- one corrupt run never breaks a listing ----------------------------------------------------------------------------


@pytest.fixture
def broken_runs(tmp_path) -> Path:
    root = copy_runs(tmp_path, ["smollm2-demo", "smollm2-stopped"])
    shutil.copytree(root / "smollm2-demo", root / "status-list")
    (root / "status-list" / "status.json").write_text("[1, 2, 3]")
    shutil.copytree(root / "smollm2-demo", root / "status-types")
    (root / "status-types" / "status.json").write_text('{"state": 7, "pid": "abc"}')
    shutil.copytree(root / "smollm2-demo", root / "binary-line")
    with open(root / "binary-line" / "events.jsonl", "r+b") as fh:
        lines = fh.read().split(b"\n")
        lines.insert(5, b"\x00\xff\xfe\x9c garbage \x81")
        fh.seek(0)
        fh.write(b"\n".join(lines))
    shutil.copytree(root / "smollm2-demo", root / "no-status")
    (root / "no-status" / "status.json").unlink()
    return root


def test_corrupt_runs_are_listed_unreadable_with_the_reason(broken_runs, capsys):
    by_name = {s.name: s for s in runs.list_runs(broken_runs)}
    assert by_name["smollm2-demo"].state == "finished" and by_name["smollm2-stopped"].state == "stopped"
    assert by_name["status-list"].state == "unreadable"
    assert by_name["status-list"].problem == "status.json holds a list, not an object"
    assert by_name["status-types"].state == "unreadable" and "status.json: state" in by_name["status-types"].problem
    binary = by_name["binary-line"]
    assert binary.state == "finished" and binary.step == 200  # the rest of its history still reads
    assert "1 unreadable line skipped (line 6: not JSON" in binary.problem
    # a finished run whose status.json was deleted is shown from its events
    assert by_name["no-status"].state == "finished" and by_name["no-status"].step == 200

    assert main(["runs", "--runs-dir", str(broken_runs)]) == 0
    out = capsys.readouterr().out
    for name in by_name:
        assert name in out
    assert "status.json holds a list, not an object" in out and "unreadable" in out
    assert main(["runs", "--runs-dir", str(broken_runs), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["status-list"]["state"] == "unreadable" and rows["no-status"]["state"] == "finished"


async def test_runs_screen_lists_healthy_runs_beside_broken_ones(broken_runs, monkeypatch):
    from fixtures import host_app, wait_until
    from loratui.ui.screens.runs import RunsScreen

    monkeypatch.chdir(broken_runs.parent)
    app = host_app(lambda: RunsScreen(Path("runs")))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        states = {s.name: str(s.state) for s in screen.summaries}
        assert states == {"smollm2-demo": "finished", "smollm2-stopped": "stopped", "status-list": "unreadable",
                          "status-types": "unreadable", "binary-line": "finished", "no-status": "finished"}
        assert screen.query_one("#runs-table").row_count == 6
        while screen.selected.name != "status-list":
            await pilot.press("down")
        await pilot.pause()
        detail = str(screen.query_one("#runs-detail").render())
        assert "status.json holds a list, not an object" in detail


# -- names stay inside the runs folder ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escape", "/tmp/abs-run", "a/b", "..", "."])
def test_run_names_are_one_path_component(tmp_path, name):
    cfg = RunConfig()
    with pytest.raises(Exception) as err:
        cfg.output.name = name  # validated on assignment too
    assert "single path component" in str(err.value)
    with pytest.raises(RunError) as err:
        runs.check_run_name(name)
    assert str(err.value).startswith("output.name: ") and "single path component" in str(err.value)
    assert "\n" not in str(err.value)


def test_cli_refuses_an_escaping_name_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text("output: {runs_dir: runs}\n")
    assert main(["train", "c.yaml", "--name", "../../escape"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "output.name" in err and "single path component" in err
    (tmp_path / "abs.yaml").write_text(f"output: {{runs_dir: runs, name: {tmp_path / 'elsewhere'}}}\n")
    with pytest.raises(Exception) as exc:
        load_config(tmp_path / "abs.yaml")
    assert "output.name" in str(exc.value) and "single path component" in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abs.yaml", "c.yaml"]


# -- one truth per number --------------------------------------------------------------------------------------------


async def test_cli_runs_screen_and_monitor_show_the_same_numbers(tmp_path, monkeypatch, capsys):
    """Issue 9 item 4: a run logged up to step 18 and stopped (saved) at step 20 read 20/30 in the Monitor but
    18/30 in Runs and `loratui runs`. Now every view shows the fold's numbers."""
    from fixtures import FixedSampler, host_app, no_gpu_snapshot, screen_text, wait_until
    from loratui.ui.screens import monitor
    from loratui.ui.screens.monitor import MonitorScreen
    from loratui.ui.screens.runs import RunsScreen

    monkeypatch.setattr(monitor, "POLL_INTERVAL", 0.02)
    monkeypatch.setattr(monitor, "make_sampler", lambda pid: FixedSampler(no_gpu_snapshot()))
    monkeypatch.chdir(tmp_path)
    run = make_run(Path("runs"), "half", state="stopped", pid=4_194_301, updated=1000.0)
    events = [{"kind": "started", "time": 100.0, "max_steps": 30, "model": "m", "method": "lora"}]
    events += [{"kind": "step", "time": 100.0 + 10 * i, "step": i, "max_steps": 30, "loss": 1.0 - i / 100}
               for i in range(3, 19, 3)]
    events += [{"kind": "stopped", "time": 301.0, "step": 20, "adapter": "adapter"}]
    run.events_path.write_text("".join(json.dumps(e) + "\n" for e in events))

    assert main(["runs", "--runs-dir", "runs", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["step"], row["max_steps"], row["elapsed_s"]) == (20, 30, 201.0)
    assert main(["runs", "--runs-dir", "runs"]) == 0
    assert "20/30  67%" in capsys.readouterr().out

    app = host_app(lambda: RunsScreen(Path("runs")))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="runs")
        [s] = screen.summaries
        assert (s.step, s.max_steps, s.elapsed) == (20, 30, 201.0)
        assert "step 20/30" in str(screen.query_one("#runs-detail").render()) and "67%" in screen_text(app)

    app = host_app(lambda: MonitorScreen(run.path))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.state == "stopped", what="stopped")
        v = screen.view
        assert (v.step, v.max_steps, v.elapsed) == (20, 30, 201.0)
        text = screen_text(app)
        assert "step 20/30" in text and "67%" in text and "time 3:21" in text


def test_two_overlapping_refreshes_count_a_runs_time_once(tmp_path, monkeypatch):
    """CI caught the Runs screen showing a stopped run's time doubled (402 s for 201 s): a refresh in a thread
    worker outlived the next one and both folded the same event lines. Here every read is slow, as on a busy box."""
    import threading

    from loratui.core.protocol import EventTail
    from loratui.ui.screens.runs import SummaryCache

    run = make_run(tmp_path, "half", state="stopped", pid=4_194_301, updated=1000.0)
    events = [{"kind": "started", "time": 100.0, "max_steps": 30, "model": "m", "method": "lora"}]
    events += [{"kind": "step", "time": 100.0 + 10 * i, "step": i, "max_steps": 30, "loss": 1.0}
               for i in range(3, 19, 3)]
    events += [{"kind": "stopped", "time": 301.0, "step": 20, "adapter": "adapter"}]
    run.events_path.write_text("".join(json.dumps(e) + "\n" for e in events))

    original = EventTail.poll

    def slow_poll(self):
        start = self.offset
        time.sleep(0.05)  # the read takes a while: another refresh starts meanwhile
        self.offset = start
        return original(self)

    monkeypatch.setattr(EventTail, "poll", slow_poll)
    cache = SummaryCache()
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.summaries(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(s.step, s.elapsed) for [s] in results] == [(20, 201.0)] * 3


def test_a_preference_run_says_its_objective_in_the_listing(tmp_path):
    """`loratui runs` and the Runs screen show 'lora·dpo' for a DPO run (both read method_text); an SFT run, and a
    run whose engine has not started yet (read from its config), say what they are."""
    from loratui.core.runs import RunDir, summarize

    def run(name: str, started: dict | None, config: str) -> RunDir:
        r = RunDir(tmp_path / name)
        r.path.mkdir()
        r.config_path.write_text(config)
        r.events_path.write_text(json.dumps({"kind": "started", "model": "m", "max_steps": 4, **started}) + "\n"
                                 if started is not None else "")
        r.write_status(state="stopped")
        return r

    dpo = summarize(run("dpo", {"method": "qlora", "objective": "dpo"}, "model: {name: m}\n"))
    sft = summarize(run("sft", {"method": "lora", "objective": "sft"}, "model: {name: m}\n"))
    old = summarize(run("new", None, "model: {name: m}\nmethod: {objective: kto}\ndata: {format: preference}\n"))
    assert (dpo.method_text, sft.method_text, old.method_text) == ("qlora·dpo", "lora", "lora·kto")
    assert dpo.to_json()["objective"] == "dpo"


def test_an_evaluation_or_checkpoint_past_the_last_logged_step_moves_the_progress():
    """logging_steps 3 in a 20-step run: the last step line is 18, the evaluation and checkpoint at 20 (a QA walk saw
    'step 18/20 · final eval' while the log said 'eval at step 20' and 'checkpoint-20 saved')."""
    from loratui.core.fold import RunFold

    fold = RunFold().add_all([
        {"kind": "started", "time": 1.0, "max_steps": 20},
        {"kind": "step", "time": 2.0, "step": 18, "loss": 1.0, "epoch": 0.9},
        {"kind": "eval", "time": 3.0, "step": 20, "eval_loss": 0.5},
    ])
    assert fold.summary().step == 20 and fold.summary().epoch == 1.0
    fold = RunFold().add_all([
        {"kind": "started", "time": 1.0, "max_steps": 20},
        {"kind": "step", "time": 2.0, "step": 18, "loss": 1.0},
        {"kind": "checkpoint", "time": 3.0, "step": 20, "path": "checkpoints/checkpoint-20"},
        {"kind": "eval", "time": 4.0, "step": 0, "eval_loss": 2.0},  # a base model's evaluation moves nothing
    ])
    assert fold.summary().step == 20


async def test_a_queued_run_and_a_stopping_one_read_the_same_word_everywhere(tmp_path, monkeypatch, capsys, procs):
    """QA walk: the Queue said 'waiting' where `loratui runs` said 'created' for the same run, and the Monitor said
    'stopping' (its own note of the request) while `loratui runs` still said 'running'. Both words are run states
    now, from the one fold: stop_run records the request (stop.json, that engine's pid), every view reads it."""
    from fixtures import host_app, wait_until
    from loratui.core.queue import RunQueue
    from loratui.ui.screens import monitor
    from loratui.ui.screens.monitor import MonitorScreen
    from loratui.ui.screens.runs import RunsScreen

    monkeypatch.setattr(monitor, "POLL_INTERVAL", 0.02)
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig()
    cfg.output.name = "queued"
    entry = RunQueue("runs").add(cfg)
    assert entry.shown_state == "waiting" and runs.RunDir(Path("runs/queued")).state() == "waiting"
    # a live engine asked to stop: it finishes its step and saves first (this stand-in ignores SIGTERM's exit)
    run = make_run(Path("runs"), "live")
    proc = spawn([sys.executable, "-c", STANDIN.replace("sys.exit(0)", "None"), "loratui", "engine",
                  str(run.path.resolve())])
    procs.append(proc)
    assert proc.stdout.readline().strip() == "ready"
    run.status_path.write_text(json.dumps({"state": "running", "pid": proc.pid,
                                           "pid_started": psutil.Process(proc.pid).create_time()}))
    assert run.state() == "running" and runs.stop_run(run) and run.state() == "stopping"
    assert proc.poll() is None

    assert main(["runs", "--runs-dir", "runs"]) == 0
    words = {ln.split()[0]: ln.split()[1] for ln in capsys.readouterr().out.splitlines()[1:] if ln.strip()}
    assert words == {"queued": "waiting", "live": "stopping"}, words
    app = host_app(lambda: RunsScreen(Path("runs")))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.loaded, what="runs")
        assert {s.name: str(s.state) for s in app.screen.summaries} == words
    app = host_app(lambda: MonitorScreen(run.path))  # another session's Monitor, opened after the stop
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.state == "stopping", what="stopping")
    # a resume is another engine process: it runs until it is asked
    run.stop_path.write_text(json.dumps({"pid": proc.pid, "pid_started": 1.0}))
    assert run.state() == "running"
