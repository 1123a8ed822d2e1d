"""Studies (a config and a grid of variations) and the run queue that works through them (no engine started here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loratui.core.errors import ConfigError
from loratui.core.queue_runner import step
from loratui.core.queue import RunQueue
from loratui.core.runs import RunDir
from loratui.core.study import load_study, parse_study, read_study_tag, study_runs
from fixtures import hold_run_lock

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "sample_configs"


def names(study) -> list[str]:
    return [r.name for r in study.runs]


def test_grid_expands_and_non_lora_methods_ignore_lora_keys(tmp_path):
    study = parse_study({"study": "g", "base": str(CONFIGS / "minilm-sentiment.yaml"),
                         "grid": {"method.kind": ["full", "head-only", "lora"], "lora.r": [4, 8, 16]}})
    # full and head-only don't use r: 1 + 1 + 3 runs, not 9
    assert [(r.config.method.kind, r.config.lora.r if r.config.method.kind == "lora" else None)
            for r in study.runs] == [("full", None), ("head-only", None), ("lora", 4), ("lora", 8), ("lora", 16)]
    assert names(study) == ["g-full", "g-head-only", "g-lora-r4", "g-lora-r8", "g-lora-r16"]
    assert all(r.config.output.name == r.name for r in study.runs)


def test_variants_carry_their_own_settings_and_labels_leave_out_what_follows_the_method():
    study = load_study(CONFIGS / "study-lora-vs-full.yaml")
    assert study.name == "lora-vs-full"
    got = {r.label: (r.config.method.kind, r.config.lora.r, r.config.train.lr) for r in study.runs}
    assert got == {"full": ("full", 8, 5e-5), "lora r4": ("lora", 4, 0.005), "lora r8": ("lora", 8, 0.005),
                   "lora r16": ("lora", 16, 0.005), "head-only": ("head-only", 8, 0.01)}
    assert all(r.config.data.source == "sample:sentiment.csv" for r in study.runs)


def test_the_tutorials_three_class_study():
    study = load_study(CONFIGS / "study-reviews3-rank.yaml")
    assert names(study) == ["reviews3-rank-r4", "reviews3-rank-r16"]
    for r in study.runs:
        assert r.config.model.num_labels == 3 and r.config.model.name == "minilm-l6-v2"
        assert r.config.data.source == "sample:reviews3.csv" and r.config.train.epochs == 2


def test_inline_config_and_list_valued_fields(tmp_path):
    study = parse_study({"config": {"model": {"name": "x"}, "train": {"max_steps": 3}},
                         "grid": {"lora.target_modules": [["q_proj"], ["q_proj", "v_proj"]]}}, source="t.yaml")
    assert [r.config.lora.target_modules for r in study.runs] == [["q_proj"], ["q_proj", "v_proj"]]
    assert study.name == "t"
    flat = parse_study({"config": {"model": {"name": "x"}}, "grid": {"lora.target_modules": ["q_proj", "v_proj"]}})
    assert len(flat.runs) == 1  # a flat list is one value of a list field


@pytest.mark.parametrize("data, words", [
    ({"grid": {"lora.r": [4]}, "colour": 1}, "unknown key 'colour'"),
    ({"grid": {"r": [4]}}, "'r' is not a config path"),
    ({"grid": {"lora.r": [0]}}, "lora.r"),
    ({"grid": {"lora.rank": [4]}}, "unknown key 'rank'"),
    ({"variants": {"lora.r": 4}}, "variants must be a list"),
])
def test_mistakes_name_the_field(data, words):
    with pytest.raises(ConfigError) as err:
        parse_study(data)
    assert words in str(err.value)


def test_samples_are_current_and_reviews3_is_balanced():
    import csv
    import subprocess
    import sys

    assert subprocess.run([sys.executable, str(REPO / "loratui/samples/make_samples.py"), "--check"],
                          capture_output=True).returncode == 0
    for name, n in (("reviews3.csv", 1500), ("reviews3-eval.csv", 300)):
        rows = list(csv.DictReader(open(REPO / "loratui/samples" / name)))
        assert len(rows) == n
        assert {lab: sum(r["label"] == lab for r in rows) for lab in ("negative", "neutral", "positive")} == \
            {"negative": n // 3, "neutral": n // 3, "positive": n // 3}
    train = {r["text"] for r in csv.DictReader(open(REPO / "loratui/samples/reviews3.csv"))}
    held = {r["text"] for r in csv.DictReader(open(REPO / "loratui/samples/reviews3-eval.csv"))}
    assert not train & held


# -- the queue ----------------------------------------------------------------------------------------------------

class FakeLaunch:
    """Stands in for launch_detached: records the order and the GPU each run was given."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str | None]] = []

    def __call__(self, run: RunDir, env=None) -> int:
        import os

        import psutil

        self.started.append((run.name, (env or {}).get("CUDA_VISIBLE_DEVICES")))
        me = psutil.Process(os.getpid())  # this live process stands in for the engine
        run.write_status(state="running", pid=me.pid, pid_started=me.create_time(), cmdline=me.cmdline())
        hold_run_lock(run.path)
        return me.pid


def finish(run_path: Path, state: str = "finished") -> None:
    run = RunDir(run_path)
    with open(run.events_path, "a") as fh:
        fh.write(json.dumps({"kind": state, "time": 1.0, "step": 2}) + "\n")
    run.write_status(state=state, ended=2.0)


@pytest.fixture
def study():
    return parse_study({"study": "s", "config": {"model": {"name": "m"}, "train": {"max_steps": 2}},
                        "grid": {"lora.r": [4, 8, 16]}})


def test_queue_creates_run_folders_tagged_with_their_study(tmp_path, study):
    q = RunQueue(tmp_path / "runs")
    entries = q.add_study(study)
    assert [e.run for e in entries] == ["s-r4", "s-r8", "s-r16"]
    assert [e.state for e in q.read().entries] == ["waiting"] * 3
    for i, e in enumerate(entries):
        run = RunDir(q.runs_dir / e.run)
        assert run.config().lora.r == [4, 8, 16][i] and run.state() == "waiting"
        assert read_study_tag(run.path)["study"] == "s" and read_study_tag(run.path)["index"] == i
    assert [p.name for p in study_runs(q.runs_dir, "s")] == ["s-r4", "s-r8", "s-r16"]
    # queued again: new folders, and the study's newest batch is the one Compare shows
    again = q.add_study(study)
    assert [e.run for e in again] == ["s-r4-2", "s-r8-2", "s-r16-2"]


def test_runner_starts_one_after_another(tmp_path, study):
    q = RunQueue(tmp_path / "runs")
    q.add_study(study)
    launch = FakeLaunch()
    lines: list[str] = []
    assert step(q, echo=lines.append, launch=launch)
    assert launch.started == [("s-r4", None)]
    assert step(q, echo=lines.append, launch=launch) and len(launch.started) == 1  # still running: nothing new
    finish(q.runs_dir / "s-r4")
    step(q, echo=lines.append, launch=launch)
    assert launch.started[-1] == ("s-r8", None)
    finish(q.runs_dir / "s-r8", "failed")
    step(q, echo=lines.append, launch=launch)
    finish(q.runs_dir / "s-r16")
    assert not step(q, echo=lines.append, launch=launch)  # nothing waits or runs: the runner would exit
    assert [(e.run, e.state) for e in q.read().entries] == [("s-r4", "finished"), ("s-r8", "failed"),
                                                             ("s-r16", "finished")]
    assert any("s-r8: failed" in line for line in lines)


def test_reorder_and_cancel(tmp_path, study):
    q = RunQueue(tmp_path / "runs")
    a, b, c = q.add_study(study)
    assert q.move(c.id, -1) and not q.move(a.id, -1)
    assert [e.run for e in q.read().entries] == ["s-r4", "s-r16", "s-r8"]
    assert q.cancel(b.id) == "cancelled"
    assert not (q.runs_dir / "s-r8").exists()  # never started: its folder goes
    launch = FakeLaunch()
    step(q, launch=launch, echo=lambda line: None)
    finish(q.runs_dir / "s-r4")
    step(q, launch=launch, echo=lambda line: None)
    assert [name for name, _ in launch.started] == ["s-r4", "s-r16"]
    assert q.clear_done() == 2  # finished + cancelled forgotten, the running one stays
    assert [e.run for e in q.read().entries] == ["s-r16"]


def test_several_gpus_run_side_by_side(tmp_path, study):
    q = RunQueue(tmp_path / "runs")
    q.add_study(study)
    launch = FakeLaunch()
    step(q, gpus=["0", "1"], launch=launch, echo=lambda line: None)
    assert launch.started == [("s-r4", "0"), ("s-r8", "1")]
    finish(q.runs_dir / "s-r8")
    step(q, gpus=["0", "1"], launch=launch, echo=lambda line: None)
    assert launch.started[-1] == ("s-r16", "1")


def test_one_runner_per_runs_folder(tmp_path):
    import os

    q = RunQueue(tmp_path / "runs")
    assert q.claim_runner() and q.runner_pid() == os.getpid()
    assert q.claim_runner()  # the same process may claim again
    q.release_runner()
    assert q.runner_pid() is None and not q.runner_path.exists()
    assert q.ensure_runner() is None  # nothing waits: no runner started


def test_auto_uses_the_gpus_free_now(tmp_path, study):
    q = RunQueue(tmp_path / "runs")
    q.add_study(study)
    launch = FakeLaunch()
    free = {"now": ["0", "2"]}
    step(q, gpus=["auto"], launch=launch, echo=lambda line: None, free_gpus=lambda: free["now"])
    assert launch.started == [("s-r4", "0"), ("s-r8", "2")]
    free["now"] = []  # both taken (by our runs); no other GPU frees up
    step(q, gpus=["auto"], launch=launch, echo=lambda line: None, free_gpus=lambda: free["now"])
    assert len(launch.started) == 2
    finish(q.runs_dir / "s-r4")
    free["now"] = ["0"]  # its run ended: GPU 0 is free again
    step(q, gpus=["auto"], launch=launch, echo=lambda line: None, free_gpus=lambda: free["now"])
    assert launch.started[-1] == ("s-r16", "0")


def test_auto_without_gpus_runs_one_at_a_time(tmp_path, study):
    q = RunQueue(tmp_path / "runs")
    q.add_study(study)
    launch = FakeLaunch()
    step(q, gpus=["auto"], launch=launch, echo=lambda line: None, free_gpus=lambda: None)
    assert launch.started == [("s-r4", None)]


def test_auto_waits_while_every_gpu_is_busy(tmp_path, study):
    q = RunQueue(tmp_path / "runs")
    q.add_study(study)
    launch = FakeLaunch()
    assert step(q, gpus=["auto"], launch=launch, echo=lambda line: None, free_gpus=lambda: [])
    assert launch.started == [] and [e.state for e in q.read().entries] == ["waiting"] * 3


def test_a_killed_runner_is_shown_its_ended_runs_recorded_and_the_cli_restarts_it(tmp_path, study, capsys):
    """Issue 15 item 10: SIGKILL the runner; `loratui queue` records the run that ended meanwhile instead of showing
    it running forever, says no runner runs while runs wait, and `loratui queue --start` starts one."""
    import json
    import os
    import shutil
    import signal
    import subprocess
    import time

    from loratui.cli import main as cli_main

    q = RunQueue(tmp_path / "runs")
    first, second, third = q.add_study(study)
    sleeper = subprocess.Popen(["sleep", "60"])  # stands in for the runner, then dies the hard way
    from loratui.core.runs import process_start_time

    q.runner_path.write_text(json.dumps({"pid": sleeper.pid, "pid_started": process_start_time(sleeper.pid)}))
    with q.edit() as state:
        state.find(first.id).state = "running"
    finish(tmp_path / "runs" / first.run)  # its run ended while the runner was gone
    os.kill(sleeper.pid, signal.SIGKILL)
    sleeper.wait()
    assert cli_main(["queue", "--runs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "runner not running" in out and f"{first.id}  finished" in out
    assert "2 waiting and no runner" in out and "loratui queue --start" in out
    # the two waiting runs' folders are gone: the restarted runner records that and ends
    for e in (second, third):
        shutil.rmtree(tmp_path / "runs" / e.run)
    assert cli_main(["queue", "--runs-dir", str(tmp_path / "runs"), "--start"]) == 0
    assert "started the queue runner (pid " in capsys.readouterr().out
    deadline = time.monotonic() + 60
    while [e.state for e in q.read().entries] != ["finished", "failed", "failed"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [e.state for e in q.read().entries] == ["finished", "failed", "failed"]
