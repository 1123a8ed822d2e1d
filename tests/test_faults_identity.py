"""Issue 15, items 1-2, injected as they happened: forged status/launch files that copy another process's identity
must not aim stop, checkpoint-now or queue cancel at it; two resumes of one run must never run two engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from loratui.cli import main as cli_main
from loratui.core import runs
from loratui.core.config import RunConfig
from loratui.core.identity import RunBusy, RunLock
from loratui.core.queue import Entry, RunQueue

REPO = Path(__file__).resolve().parent.parent

# a process that looks like this run's engine from outside (its command line names the run) but is not one
STRANGER = """
import pathlib, signal, sys, time
flag = pathlib.Path(sys.argv[1])
for sig in (signal.SIGTERM, signal.SIGUSR1):
    signal.signal(sig, lambda s, f: flag.write_text(signal.Signals(s).name))
print("ready", flush=True)
time.sleep(120)
"""

# a real lock holder: the engine of another run
OTHER_ENGINE = STRANGER.replace('print("ready"', 'from loratui.core.identity import RunLock\n'
                                'lock = RunLock.acquire(pathlib.Path(sys.argv[-1]))\nprint("ready"')


def _spawn(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _bare_run(root: Path, name: str) -> runs.RunDir:
    run = runs.RunDir(root / name)
    run.path.mkdir(parents=True)
    cfg = RunConfig()
    cfg.output.name = name
    cfg.save(run.config_path)
    run.events_path.write_text(json.dumps({"kind": "started", "time": 1.0, "max_steps": 10}) + "\n")
    return run


def _forge(run: runs.RunDir, proc: psutil.Process) -> None:
    """Copy ``proc``'s pid, start time and command line into status.json and a newer launch.json."""
    ident = {"pid": proc.pid, "pid_started": proc.create_time(), "cmdline": proc.cmdline()}
    run.status_path.write_text(json.dumps({"state": "running", "updated": time.time() - 5, **ident}))
    run.launch_path.write_text(json.dumps({"launched": time.time(), **ident}))


def _assert_untouched(proc: subprocess.Popen, flag: Path) -> None:
    time.sleep(0.3)
    assert proc.poll() is None and not flag.exists(), "a process that is not the run's engine was signalled"


def test_forged_status_naming_a_lookalike_process_aims_at_nothing(tmp_path, procs, capsys):
    run = _bare_run(tmp_path / "runs", "victim")
    flag = tmp_path / "flag"
    # its command line even reads "loratui engine <this run>": still not proof
    stranger = _spawn(STRANGER, str(flag), "loratui", "engine", str(run.path))
    procs.append(stranger)
    _forge(run, psutil.Process(stranger.pid))
    assert runs.stop_run(run) is False
    assert runs.request_checkpoint(run) is False
    assert cli_main(["stop", str(run.path)]) == 2
    assert "is not running" in capsys.readouterr().err
    assert run.state() == "crashed"
    # queue cancel of a 'running' entry goes through the same proof
    q = RunQueue(run.path.parent)
    with q.edit() as state:
        state.entries.append(Entry(id="e1", run=run.name, state="running"))
    assert q.cancel("e1") == "stopping"
    _assert_untouched(stranger, flag)


def test_forged_status_naming_another_runs_engine_aims_at_nothing(tmp_path, procs):
    runs_dir = tmp_path / "runs"
    victim, other = _bare_run(runs_dir, "victim"), _bare_run(runs_dir, "other")
    flag = tmp_path / "flag"
    engine = _spawn(OTHER_ENGINE, str(flag), "loratui", "engine", str(other.path))  # holds other's lock
    procs.append(engine)
    assert runs.engine_process(other.path, engine.pid) is not None  # it is other's engine, proven
    _forge(victim, psutil.Process(engine.pid))
    assert runs.stop_run(victim) is False and runs.request_checkpoint(victim) is False
    assert victim.state() == "crashed"
    _assert_untouched(engine, flag)
    # the real run still reaches its own engine
    assert runs.request_checkpoint(_with_status(other, engine.pid))
    deadline = time.monotonic() + 10
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.read_text() == "SIGUSR1"


def _with_status(run: runs.RunDir, pid: int) -> runs.RunDir:
    proc = psutil.Process(pid)
    run.status_path.write_text(json.dumps({"state": "running", "pid": pid, "pid_started": proc.create_time()}))
    return run


def test_the_lock_is_exclusive_and_dies_with_its_holder(tmp_path, procs):
    run = _bare_run(tmp_path / "runs", "r")
    holder = _spawn(OTHER_ENGINE, str(tmp_path / "flag"), str(run.path))
    procs.append(holder)
    with pytest.raises(RunBusy, match=rf"r is already running \(pid {holder.pid}\)"):
        RunLock.acquire(run.path)
    holder.kill()
    holder.wait()
    with RunLock.acquire(run.path):  # the kernel released it with the process
        pass


# -- two engines on one run ------------------------------------------------------------------------------------------


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "loratui", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, **(env or {})})


def _stopped_run(tmp_path: Path, model: Path) -> runs.RunDir:
    runs_dir = tmp_path / "runs"
    data = {
        "model": {"name": str(model)}, "lora": {"r": 4, "alpha": 8},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 48,
                 "validation_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 100000, "batch_size": 2, "lr": 1e-3, "logging_steps": 1, "save_steps": 2,
                  "eval_steps": None},
        "output": {"runs_dir": str(runs_dir), "name": "twice"},
    }
    run = runs.create_run(RunConfig.model_validate(data))
    from loratui.train.engine import Engine

    engine = Engine(run)  # in this process (no torch import to wait for), stopped after its first step

    def echo(line: str) -> None:  # the stop request a signal makes
        if line.startswith("step 1/"):
            engine.stop_request.stop = True

    engine.echo = echo
    assert engine.run() == 0 and run.state() == "stopped"
    _more_steps(run, 6)
    return run


def _kinds(run: runs.RunDir, kind: str) -> list[dict]:
    return [e for e in run.events() if e["kind"] == kind]


def _more_steps(run: runs.RunDir, n: int) -> int:
    """Let a stopped run train n steps more when resumed; returns the step it stopped at."""
    stopped = _kinds(run, "stopped")[-1]["step"]
    cfg = yaml.safe_load(run.config_path.read_text())
    cfg["train"]["max_steps"] = stopped + n
    run.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return stopped


def test_two_engines_never_run_one_run(tmp_path, tiny_llama, procs):
    """A foreground resume, then a detached one beside it: refused, naming the foreground engine. Then two detached
    resumes at the same moment: one engine; the other refused; one resumed and one finished event, no step twice."""
    run = _stopped_run(tmp_path, tiny_llama)
    slow = {"LORATUI_TEST_SAVE_SLEEP": "*:1"}  # keeps an engine alive while the second launch tries
    fg = _cli("train", "--resume", str(run.path), env=slow)
    procs.append(fg)
    deadline = time.monotonic() + 120
    while run.state() != "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.state() == "running" and runs.engine_process(run.path, fg.pid) is not None
    det = _cli("train", "--resume", str(run.path), "--detach")
    out, err = det.communicate(timeout=120)
    assert det.returncode == 2 and f"twice is already running (pid {fg.pid})" in err, (out, err)
    assert "Traceback" not in err
    assert runs.stop_run(run)
    assert fg.wait(timeout=120) in (0, 130) and runs.wait_for_state(run, timeout=60) == "stopped"
    # two detached resumes at the same moment
    stopped = _more_steps(run, 3)
    before = len(run.events())
    # no slow saves here: the winning launcher holds the lock from before it spawns the engine, whose imports alone
    # outlast the loser's refusal and the foreground try below (a launch that refuses takes about 0.2 s)
    a, b = _cli("train", "--resume", str(run.path), "--detach"), _cli("train", "--resume", str(run.path), "--detach")
    outs = [p.communicate(timeout=120) for p in (a, b)]
    assert sorted([a.returncode, b.returncode]) == [0, 2], outs
    refused = next(err for (out, err), p in zip(outs, (a, b)) if p.returncode == 2)
    assert "twice is already running (pid " in refused and "Traceback" not in refused
    engine_pid = json.loads(run.launch_path.read_text())["pid"]
    fg2 = _cli("train", "--resume", str(run.path))  # and a foreground one while it runs: refused the same way
    out, err = fg2.communicate(timeout=120)
    assert fg2.returncode == 2 and f"twice is already running (pid {engine_pid})" in err, (out, err)
    assert runs.wait_for_state(run, timeout=180) == "finished", "\n".join(run.log_tail(40))
    new = run.events()[before:]
    assert [e["kind"] for e in new].count("resumed") == 1 and [e["kind"] for e in new].count("finished") == 1
    steps = [e["step"] for e in new if e["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps[-1] == stopped + 3  # no step logged twice
    assert not [p.name for p in run.checkpoints_dir.iterdir() if p.name.startswith(".")]
