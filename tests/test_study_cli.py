"""``loratui study FILE``: a dry run lists the runs; a real one runs them headless and prints the comparison."""

from __future__ import annotations

import csv

from loratui.cli import main as cli_main
from test_app_queue import write_study


def test_dry_run_lists_the_runs(capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "sample_configs" / "study-lora-vs-full.yaml"
    assert cli_main(["study", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "study lora-vs-full: 5 runs" in out
    for name in ("lora-vs-full-full", "lora-vs-full-lora-r4", "lora-vs-full-lora-r16", "lora-vs-full-head-only"):
        assert name in out


def _engine_in_this_process(run, **kwargs) -> int:
    """The queue's launch, with the engine run here to its end (no second torch import): the run is finished when
    the queue next looks, as a detached engine's would be (tests/test_app_queue.py keeps the real processes)."""
    import os

    from loratui.train.engine import Engine

    Engine(run, echo=lambda line: None).run()
    return os.getpid()


def test_a_study_runs_headless(tmp_path, tiny_bert, monkeypatch, capsys):
    from loratui.core import queue_runner

    step = queue_runner.step
    monkeypatch.setattr(queue_runner, "step", lambda q, gpus=None, echo=print, **kw: step(
        q, gpus, echo, **{**kw, "launch": _engine_in_this_process}))
    monkeypatch.chdir(tmp_path)
    study = write_study(tmp_path, tiny_bert)
    code = cli_main(["study", str(study), "--runs-dir", str(tmp_path / "runs"), "--export", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tiny-r2: finished, accuracy" in out and "tiny-r4: finished, accuracy" in out
    assert "# study tiny" in out and "| lora.r | 2 | 4 |" in out
    rows = list(csv.DictReader(open(tmp_path / "out" / "tiny.csv")))
    assert [(r["run"], r["state"]) for r in rows] == [("tiny-r2", "finished"), ("tiny-r4", "finished")]
    assert (tmp_path / "out" / "tiny.md").is_file()
    assert cli_main(["queue", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert "runner not running" in capsys.readouterr().out


def test_dry_run_shows_the_names_a_rerun_gets(tmp_path, capsys):
    """Names already taken in the runs folder get -2, -3 ...: the dry run lists what queuing it would make."""
    from pathlib import Path

    from loratui.core.queue import RunQueue
    from loratui.core.study import load_study

    path = Path(__file__).resolve().parent.parent / "sample_configs" / "study-lora-vs-full.yaml"
    runs = tmp_path / "runs"
    for taken in ("lora-vs-full-full", "lora-vs-full-lora-r4", "lora-vs-full-lora-r4-2"):
        (runs / taken).mkdir(parents=True)
    assert cli_main(["study", str(path), "--dry-run", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert "lora-vs-full-full-2" in listed and "lora-vs-full-lora-r4-3" in listed
    assert "lora-vs-full-full" not in listed and "lora-vs-full-lora-r16" in listed
    assert "2 planned names are taken in" in out
    assert not (runs / ".queue").exists()  # a dry run makes nothing
    # the names queuing it makes are the ones the dry run listed
    assert [e.run for e in RunQueue(runs).add_study(load_study(path))] == listed
