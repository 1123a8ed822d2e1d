"""Walks of the runs folder for live engines (the app's live runs, the queue's runs outside it) share one cheap
filter, :meth:`RunDir.may_be_live`: a long-finished run is not looked at closer, a resume's first seconds (launch.json
newer than the stopped run's status) are."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import psutil

from fixtures import RUNS, hold_run_lock
from loratui.core.queue_runner import outside_runs
from loratui.core.runs import RunDir, live_runs


def _launched(run: Path, *, pid: int, age: float, status_age: float) -> None:
    """launch.json naming ``pid``, written ``age`` seconds ago; status.json last written ``status_age`` seconds ago."""
    me, now = psutil.Process(pid), time.time()
    (run / "launch.json").write_text(json.dumps({"pid": pid, "pid_started": me.create_time(), "cmdline": me.cmdline(),
                                                 "launched": round(now - age, 3), "resume": True}))
    status = json.loads((run / "status.json").read_text())
    (run / "status.json").write_text(json.dumps({**status, "updated": round(now - status_age, 3)}))
    for name, ago in (("launch.json", age), ("status.json", status_age)):
        os.utime(run / name, (now - ago, now - ago))


def test_a_long_finished_run_is_not_looked_at_closer(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS / "smollm2-demo", runs / "done")  # status.json: finished
    _launched(runs / "done", pid=os.getpid(), age=7200, status_age=3600)  # launched, then ended an hour later
    assert not RunDir(runs / "done").may_be_live()
    looked: list[str] = []
    real = RunDir.engine_process
    monkeypatch.setattr(RunDir, "engine_process", lambda self: looked.append(self.name) or real(self))
    assert outside_runs(runs, set()) == [] and live_runs(runs) == []
    assert looked == []  # no engine-process check for it, by either walk


def test_a_resume_in_its_first_seconds_is_live_for_both_walks(tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(RUNS / "smollm2-stopped", runs / "resumed")  # status.json: stopped, an hour ago
    _launched(runs / "resumed", pid=os.getpid(), age=1, status_age=3600)  # relaunched a second ago, no word yet
    hold_run_lock(runs / "resumed")  # as its engine does
    assert RunDir(runs / "resumed").may_be_live()
    assert [o.name for o in outside_runs(runs, set())] == ["resumed"]
    assert [(s.name, s.state.active) for s in live_runs(runs)] == [("resumed", True)]


def test_the_filter_keeps_a_launch_not_older_than_its_status(tmp_path):
    run = RunDir(tmp_path / "r")
    shutil.copytree(RUNS / "smollm2-stopped", run.path)
    assert not run.may_be_live()  # no launch.json, status says stopped
    _launched(run.path, pid=os.getpid(), age=5, status_age=5)  # one filesystem tick: kept
    assert run.may_be_live()
    run.status_path.unlink()  # launched, the engine has not written yet
    assert run.may_be_live()
    run.write_status(state="running")  # its engine says it runs, whatever the times
    os.utime(run.launch_path, (0, 0))
    assert run.may_be_live()
