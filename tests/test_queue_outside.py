"""Runs outside the queue (started from Setup, `loratui train`, `--detach`, another session) hold their cards: a
queued run waits for them as for the queue's own, and the queue says why. A walk at 80x24 found the Queue starting
its run at once beside a run training from Setup (two engines on one card)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from fixtures import hold_run_lock, make_live_run
from loratui.core.queue_runner import step
from loratui.core.queue import RunQueue, held_text
from loratui.core.runs import RunDir
from loratui.core.study import parse_study


class FakeLaunch:
    """Stands in for launch_detached: records each run and its GPU; this live process stands in for the engine."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str | None]] = []

    def __call__(self, run: RunDir, env=None) -> int:
        import psutil

        self.started.append((run.name, (env or {}).get("CUDA_VISIBLE_DEVICES")))
        me = psutil.Process(os.getpid())
        run.write_status(state="running", pid=me.pid, pid_started=me.create_time(), cmdline=me.cmdline())
        hold_run_lock(run.path)
        return me.pid


def outside(runs: Path, name: str, gpus: list[int] | None) -> Path:
    """A run training outside the queue: its engine alive (this process), its started event naming ``gpus``
    (None: no started event yet, so its cards are not known)."""
    events = None if gpus is None else [{"kind": "started", "time": time.time(), "max_steps": 30,
                                         "gpus": [{"index": i, "name": "NVIDIA H200"} for i in gpus]}]
    return make_live_run(runs, name, pid=os.getpid(), events=events)


def end(run: Path, state: str = "finished") -> None:
    with open(run / "events.jsonl", "a") as fh:
        fh.write(json.dumps({"kind": state, "time": time.time(), "step": 30}) + "\n")
    RunDir(run).write_status(state=state, ended=time.time())


def queue_of(tmp_path: Path, n: int = 2) -> RunQueue:
    q = RunQueue(tmp_path / "runs")
    q.add_study(parse_study({"study": "s", "config": {"model": {"name": "m"}}, "grid": {"lora.r": [4, 8, 16][:n]}}))
    return q


def test_one_at_a_time_a_run_training_outside_the_queue_holds_it_until_it_ends(tmp_path, capsys):
    q = queue_of(tmp_path)
    demo = outside(q.runs_dir, "smollm2-demo", gpus=[])  # a CPU run, as the walk's
    launch = FakeLaunch()
    assert step(q, launch=launch, echo=lambda line: None)  # still alive: the runner keeps waiting
    assert launch.started == []
    assert [(e.state, e.held_by) for e in q.read().entries] == [("waiting", ["smollm2-demo"])] * 2
    # `loratui queue` says why, while a runner serves the queue
    from loratui.cli import main as cli_main

    assert q.claim_runner()
    assert cli_main(["queue", "--runs-dir", str(q.runs_dir)]) == 0
    out = capsys.readouterr().out
    assert "waiting: smollm2-demo is training (outside the queue)" in out
    assert all(len(line) <= 80 for line in out.splitlines() if "waiting:" in line)
    q.release_runner()
    end(demo, "stopped")
    step(q, launch=launch, echo=lambda line: None)
    assert launch.started == [("s-r4", None)]
    assert [(e.state, e.held_by) for e in q.read().entries] == [("running", []), ("waiting", [])]


def test_the_queues_own_runs_are_not_outside(tmp_path):
    q = queue_of(tmp_path)
    launch = FakeLaunch()
    step(q, launch=launch, echo=lambda line: None)
    assert q.read().entries[1].held_by == []  # it waits behind the queue's own run, no one outside
    end(q.runs_dir / "s-r4", "stopped")
    step(q, launch=launch, echo=lambda line: None)
    assert launch.started == [("s-r4", None), ("s-r8", None)]
    assert q.read().entries[0].state == "stopped"


def test_several_gpus_outside_runs_hold_the_cards_they_use(tmp_path):
    q = queue_of(tmp_path, 3)
    outside(q.runs_dir, "on-one", gpus=[1])
    launch = FakeLaunch()
    step(q, gpus=["0", "1", "2"], launch=launch, echo=lambda line: None)
    assert launch.started == [("s-r4", "0"), ("s-r8", "2")]
    assert q.read().entries[2].held_by == ["on-one"]


def test_several_gpus_an_outside_run_whose_cards_are_not_known_holds_them_all(tmp_path):
    q = queue_of(tmp_path)
    outside(q.runs_dir, "loading", gpus=None)  # no started event yet; its config says train.gpus: auto
    launch = FakeLaunch()
    step(q, gpus=["0", "1"], launch=launch, echo=lambda line: None)
    assert launch.started == [] and q.read().entries[0].held_by == ["loading"]


def test_several_gpus_the_config_names_the_cards_before_the_started_event(tmp_path):
    q = queue_of(tmp_path)
    run = outside(q.runs_dir, "pinned", gpus=None)
    from loratui.core.config import load_config

    cfg = load_config(run / "config.yaml")
    cfg.train.gpus = [0]
    cfg.save(run / "config.yaml", full=True)
    launch = FakeLaunch()
    step(q, gpus=["0", "1"], launch=launch, echo=lambda line: None)
    assert launch.started == [("s-r4", "1")]


def test_auto_a_card_an_outside_run_has_just_taken_is_not_free(tmp_path):
    """Its memory is not in use yet (the model still loading), so NVML reads the card free: the run holds it."""
    q = queue_of(tmp_path)
    outside(q.runs_dir, "fresh", gpus=[0])
    launch = FakeLaunch()
    step(q, gpus=["auto"], launch=launch, echo=lambda line: None, free_gpus=lambda: ["0", "1"])
    assert launch.started == [("s-r4", "1")]
    assert q.read().entries[1].held_by == ["fresh"]
    # every card busy, ours none: the queue names the outside runs it waits for
    q2 = queue_of(tmp_path / "b", 1)
    outside(q2.runs_dir, "big", gpus=[0, 1])
    step(q2, gpus=["auto"], launch=launch, echo=lambda line: None, free_gpus=lambda: [])
    assert q2.read().entries[0].held_by == ["big"]


def test_a_dead_engine_holds_nothing(tmp_path):
    q = queue_of(tmp_path)
    make_live_run(q.runs_dir, "crashed", pid=2**22 + 12345, pid_started=1.0)  # status says running; no process
    launch = FakeLaunch()
    step(q, launch=launch, echo=lambda line: None)
    assert launch.started == [("s-r4", None)] and q.read().entries[1].held_by == []


@pytest.mark.parametrize("names, width, want", [
    (["smollm2-demo"], None, "waiting: smollm2-demo is training (outside the queue)"),
    (["a", "b"], None, "waiting: a and 1 more are training (outside the queue)"),
    (["smollm2-135m-instruct-lora-20261205-002333"], 78,  # a walk at 80x24: the queued run's name began alike
     "waiting: smollm2-135m…uct-lora-20261205-002333 is training (outside the queue)"),
])
def test_held_text(names, width, want):
    assert held_text(names, width) == want
    assert width is None or len(held_text(names, width)) <= width
