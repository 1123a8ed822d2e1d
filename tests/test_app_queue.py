"""Queue journeys with the real runner and engine processes on a tiny BERT: queue a study from the app, close the
app while it runs, reopen it, watch the queue finish, and see every run land in Compare (and its export)."""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import pytest
import yaml

from fixtures import host_app, screen_text, wait_until
from loratui.core.queue import RunQueue
from loratui.core.runs import RunDir, stop_run

pytestmark = pytest.mark.usefixtures("utc")


def write_study(folder: Path, model: Path) -> Path:
    rows = [("great, I love it", "positive"), ("awful, never again", "negative"), ("really good", "positive"),
            ("terrible and dull", "negative")] * 6
    data = folder / "tiny.csv"
    with open(data, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(rows)
    study = {
        "study": "tiny",
        "config": {
            "model": {"name": str(model), "task": "seq-cls", "num_labels": 2},
            "lora": {"target_modules": ["query", "value"]},
            "data": {"source": str(data), "format": "classification", "validation_fraction": 0.25, "max_length": 32},
            "train": {"max_steps": 2, "batch_size": 4, "logging_steps": 1, "eval_steps": 2, "save_steps": 2,
                      "lr": 0.001},
            "output": {"runs_dir": "runs"},
        },
        "grid": {"lora.r": [2, 4]},
    }
    path = folder / "study-tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture
def cleanup():
    """Whatever a failed test leaves running is stopped (the runner first, then the runs)."""
    queues: list[RunQueue] = []
    yield queues
    for q in queues:
        pid = q.runner_pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
        for e in q.read().entries:
            if e.state == "running":
                stop_run(RunDir(q.runs_dir / e.run))


async def test_queue_a_study_close_the_app_reopen_and_compare(tmp_path, tiny_bert, monkeypatch, cleanup):
    from loratui.ui.app import LoratuiApp
    from loratui.ui.screens.compare import CompareScreen
    from loratui.ui.screens.queue import QueueScreen

    monkeypatch.chdir(tmp_path)
    study = write_study(tmp_path, tiny_bert)
    q = RunQueue(tmp_path / "runs")
    cleanup.append(q)

    app = LoratuiApp(runs_dir="runs")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen) and app.screen.loaded, what="queue")
        assert "The queue is empty" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        app.screen.query_one("#prompt-input").value = str(study)
        await pilot.press("enter")
        queue_screen = app.screen_stack[-1]
        await wait_until(pilot, lambda: len(queue_screen.entries) == 2 and queue_screen.runner, timeout=30,
                         what="study queued and runner started")
        assert [e.run for e in queue_screen.entries] == ["tiny-r2", "tiny-r4"]
        await wait_until(pilot, lambda: any(e.state == "running" for e in queue_screen.entries), timeout=30,
                         what="first run started")
        assert "runner pid" in screen_text(app)
    # the app is closed; the runner and the engine carry on without it
    runner = q.runner_pid()
    assert runner is not None
    assert [e.state for e in q.read().entries][1] == "waiting"

    app = LoratuiApp(runs_dir="runs")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("w")
        await wait_until(pilot, lambda: isinstance(app.screen, QueueScreen) and app.screen.loaded, what="queue")
        screen = app.screen
        assert [e.run for e in screen.entries] == ["tiny-r2", "tiny-r4"]
        await wait_until(pilot, lambda: [e.state for e in screen.entries] == ["finished", "finished"],
                         timeout=300, what="both runs finished")
        await wait_until(pilot, lambda: screen.runner is None, timeout=30, what="runner exits when done")
        await pilot.press("c")  # compare the study of the entry under the cursor
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen) and app.screen.loaded
                         and len(app.screen.rows) == 2, timeout=20, what="compare")
        compare = app.screen
        assert compare.heading == "study tiny"
        assert [(r.name, r.state, r.rank) for r in compare.rows] == [("tiny-r2", "finished", 2),
                                                                       ("tiny-r4", "finished", 4)]
        assert all(r.final_metric is not None and r.trainable and r.size_bytes for r in compare.rows)
        assert compare.rows[0].trainable < compare.rows[1].trainable
        await pilot.press("e")
        await wait_until(pilot, lambda: compare.last_export is not None, what="export")
    csv_path, md_path = compare.last_export
    table = list(csv.DictReader(open(csv_path)))
    assert [(r["run"], r["label"], r["rank"], r["state"]) for r in table] == [
        ("tiny-r2", "r2", "2", "finished"), ("tiny-r4", "r4", "4", "finished")]
    assert "| lora.r | 2 | 4 |" in md_path.read_text()


async def test_reorder_and_cancel_in_the_screen(tmp_path, monkeypatch):
    from loratui.core.study import parse_study
    from loratui.ui.screens.queue import QueueScreen

    monkeypatch.chdir(tmp_path)
    q = RunQueue(tmp_path / "runs")
    q.add_study(parse_study({"study": "s", "config": {"model": {"name": "m"}}, "grid": {"lora.r": [4, 8, 16]}}))
    app = host_app(lambda: QueueScreen(), runs_dir=Path("runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="queue")
        assert "runner stopped: p starts it" in screen_text(app)
        await pilot.press("down", "down")  # s-r16
        await pilot.press("K")
        await wait_until(pilot, lambda: [e.run for e in screen.entries] == ["s-r4", "s-r16", "s-r8"], what="moved")
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: any(e.state == "cancelled" for e in screen.entries), what="cancelled")
        cancelled = next(e for e in screen.entries if e.state == "cancelled")
        assert not (tmp_path / "runs" / cancelled.run).exists()


def test_snapshot_queue(tmp_path, monkeypatch, snap_compare):
    """Three runs of a study waiting (no runner), one finished before them; fixed times."""
    import json

    from fixtures import T0
    from loratui.core.study import parse_study
    from loratui.ui.screens.queue import QueueScreen

    monkeypatch.chdir(tmp_path)
    q = RunQueue(tmp_path / "runs")
    q.add_study(parse_study({"study": "lora-vs-full", "config": {"model": {"name": "m"}},
                             "grid": {"lora.r": [4, 8, 16]}}))
    data = json.loads(q.path.read_text())
    for i, e in enumerate(data["entries"]):
        e["added"] = T0 + i
    data["entries"][0].update(state="finished", started=T0 + 10, ended=T0 + 130)
    q.path.write_text(json.dumps(data))
    events = [{"kind": "started", "time": T0 + 10, "max_steps": 5}, {"kind": "finished", "time": T0 + 130, "step": 5}]
    (q.runs_dir / data["entries"][0]["run"] / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))

    async def settle(pilot):
        await wait_until(pilot, lambda: pilot.app.screen.loaded, what="queue")

    app = host_app(lambda: QueueScreen(), runs_dir=Path("runs"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_the_example_path_works_outside_a_checkout(tmp_path, monkeypatch):
    """The Queue's example, 'sample_configs/study-lora-vs-full.yaml', failed from any other folder ('no such file':
    a QA walk from a home folder): a sample's name finds the shipped sample; other paths stay as typed."""
    from loratui.ui.widgets.setup_core import find_config

    monkeypatch.chdir(tmp_path)
    found = find_config("sample_configs/study-lora-vs-full.yaml")
    assert found.is_file() and found.is_absolute() and found.name == "study-lora-vs-full.yaml"
    assert find_config("smollm2-demo.yaml").is_file()
    (tmp_path / "sample_configs").mkdir()
    (tmp_path / "sample_configs" / "mine.yaml").write_text("model: {}\n")
    assert str(find_config("sample_configs/mine.yaml")) == "sample_configs/mine.yaml"  # the folder here first
    assert str(find_config("configs/missing.yaml")) == "configs/missing.yaml"  # its own 'no such file'
