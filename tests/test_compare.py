"""Comparisons read from run folders, and their CSV and Markdown exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fixtures import RUNS
from loratui.core import compare


@pytest.fixture
def rows():
    return compare.read_runs([RUNS / "smollm2-demo", RUNS / "smollm2-stopped", RUNS / "smollm2-bs64-oom"])


def test_figures_come_from_the_run_folders(rows):
    demo, stopped, oom = rows
    assert (demo.state, stopped.state, oom.state) == ("finished", "stopped", "failed")
    assert demo.method == "lora" and demo.rank == 8 and demo.targets == "q_proj,v_proj"
    assert demo.trainable == 460800 and demo.share == pytest.approx(460800 / 134975808)
    assert demo.metric_name == "eval_loss" and demo.final_metric == pytest.approx(1.0324)
    assert demo.train_time_s == pytest.approx(92.7) and demo.peak_memory_gb == pytest.approx(3.21)
    assert 9000 < demo.tokens_per_s < 10000
    assert demo.saved_as == "adapter" and demo.size_bytes > 900_000
    assert demo.eval_curve[0] == (25, pytest.approx(2.3964)) and len(demo.eval_curve) == 8
    assert oom.final_metric is None and oom.size_bytes is None


def test_only_differing_config_keys(rows):
    diffs = dict(compare.config_differences(rows))
    assert diffs == {"train.max_steps": [200, 400, 300], "train.batch_size": [8, 8, 64]}


def test_full_and_head_only_runs_show_no_lora_settings(tmp_path):
    from loratui.core.queue import RunQueue
    from loratui.core.study import parse_study

    study = parse_study({"study": "s", "config": {"model": {"name": "m", "task": "seq-cls"},
                                                  "data": {"format": "classification"}},
                         "variants": [{"method.kind": "full"}, {"method.kind": "lora", "lora.r": 4}]})
    q = RunQueue(tmp_path / "runs")
    q.add_study(study)
    rows = compare.read_runs([tmp_path / "runs" / "s-full", tmp_path / "runs" / "s-lora-r4"])
    assert rows[0].targets == "all weights" and rows[0].rank is None
    assert dict(compare.config_differences(rows))["lora.r"] == ["-", 4]
    assert rows[0].metric_name == "accuracy" and rows[0].label == "full" and rows[0].study == "s"


def test_export_csv_and_markdown(tmp_path, rows):
    csv_path, md_path = compare.export(rows, tmp_path / "out", title="Demo runs", stem="demo")
    assert (csv_path.name, md_path.name) == ("demo.csv", "demo.md")
    table = list(csv.DictReader(open(csv_path)))
    assert [r["run"] for r in table] == ["smollm2-demo", "smollm2-stopped", "smollm2-bs64-oom"]
    assert table[0]["trainable_params"] == "460800" and table[0]["final_metric"] == "1.0324"
    assert table[2]["final_metric"] == "" and table[2]["train.batch_size"] == "64"
    md = md_path.read_text()
    assert md.startswith("# Demo runs\n")
    assert "| final eval loss | 1.0324 | 1.4617 so far | - |" in md  # the stopped run has no final evaluation
    assert "| train.batch_size | 8 | 8 | 64 |" in md
    for chart in ("## eval loss: final, or so far", "## active time", "## trainable params", "## peak GPU memory",
                  "## eval loss by step"):
        assert chart in md
    assert "smollm2-demo     │" in md and "█" in md  # bars drawn as text
    bars = [ln for ln in md.splitlines() if ln.startswith("smollm2-stopped  │")]  # values as the table writes them
    assert [ln.split("█")[-1].split(" ", 1)[-1] for ln in bars] == ["1.4617 so far", "0:59", "461k", "3.21 GiB"]
    assert "2.3964 (step 25) -> 1.0324 (step 200)" in md


def test_text_bars_use_a_log_scale_for_wide_ranges():
    values = [22_713_986.0, 74_498.0, 770.0]
    assert compare.needs_log(values) and not compare.needs_log([0.7, 0.99])
    text = compare.text_bars(["full", "lora", "head"], values, width=20, log=True)
    full, lora, head = (line.count("█") for line in text.splitlines())
    assert full == 20 and 0 < head < lora < full
    assert "22.7M" in text and "770" in text


def test_a_stopped_and_resumed_run_shows_one_time_everywhere(tmp_path, capsys):
    """Issue 19 items 1 and 11: Compare's training time is the one fold's (both engine parts), not the resumed
    part's runtime; the base model's step-0 evaluation is never 'best'."""
    import json

    from loratui.cli import main as cli_main
    from loratui.core import compare
    from loratui.core.config import RunConfig
    from loratui.core.fmt import format_duration
    from loratui.core.runs import RunDir, summarize

    run = RunDir(tmp_path / "runs" / "resumed")
    run.path.mkdir(parents=True)
    RunConfig().save(run.config_path)
    t = 1000.0
    evs = [{"kind": "started", "time": t, "max_steps": 20},
           {"kind": "eval", "time": t + 5, "step": 0, "eval_loss": 0.30},  # the base model: lowest, not "best"
           *[{"kind": "step", "time": t + 10 * i, "step": i, "max_steps": 20, "loss": 1.0, "elapsed": 10 * i}
             for i in range(1, 11)],
           {"kind": "eval", "time": t + 101, "step": 10, "eval_loss": 0.5},
           {"kind": "stopped", "time": t + 110, "step": 10},
           {"kind": "started", "time": t + 5000, "max_steps": 20, "resumed": True},
           {"kind": "resumed", "time": t + 5001, "step": 10},
           *[{"kind": "step", "time": t + 5001 + 10 * (i - 10), "step": i, "max_steps": 20, "loss": 0.5,
              "elapsed": 10 * (i - 10)} for i in range(11, 21)],
           {"kind": "eval", "time": t + 5105, "step": 20, "eval_loss": 0.4},
           {"kind": "finished", "time": t + 5110, "step": 20, "runtime_s": 109.0}]
    run.events_path.write_text("".join(json.dumps(e) + "\n" for e in evs))
    run.status_path.write_text(json.dumps({"state": "finished", "pid": 4_194_301, "started": t, "ended": t + 5110}))
    folded = summarize(run)
    row = compare.read_run(run.path)
    assert folded.elapsed == pytest.approx(110 + 110) and row.train_time_s == folded.elapsed
    assert folded.best_eval_loss == 0.4 and folded.best_eval_step == 20 and row.best_eval_loss == 0.4
    assert cli_main(["runs", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert format_duration(folded.elapsed) in capsys.readouterr().out


def test_a_cpu_run_shows_its_host_memory(tmp_path):
    """Issue 19 item 18: a finished CPU run's memory was '- (CPU run)'; its engine now records the process's peak
    resident memory in its memory events, and Compare shows it in place of a GPU figure."""
    import shutil

    run = tmp_path / "cpu"
    shutil.copytree(RUNS / "smollm2-demo", run)
    events = [json.loads(ln) for ln in (run / "events.jsonl").read_text().splitlines()]
    events = [{**e, "device": "cpu"} if e["kind"] == "started" else e for e in events if e["kind"] != "memory"]
    events.insert(-1, {"kind": "memory", "time": events[-2]["time"], "step": 200, "device": "cpu",
                       "host_peak_gb": 3.54})
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    row = compare.read_runs([run])[0]
    assert row.peak_memory_gb is None and row.host_peak_gb == pytest.approx(3.54)
    cells = dict(compare.table_rows([row]))
    assert cells["peak GPU memory"] == ["- (CPU run: host 3.54 GiB)"]


def test_a_preset_and_its_modules_listed_are_not_a_difference(tmp_path):
    """Setup saves a preset's modules as a list; the same preset in YAML stays a name: the same run to Compare (a
    QA walk saw lora.target_modules 'q_pro…,down_proj' against '-'). Another preset is a difference."""
    from loratui.core.presets import PRESETS
    from loratui.core.queue import RunQueue
    from loratui.core.study import parse_study

    listed = sorted(PRESETS["llama-all"])
    study = parse_study({"study": "t", "config": {"model": {"name": "m"}, "data": {"format": "text"}},
                         "variants": [{"lora.preset": "llama-all"}, {"lora.target_modules": listed},
                                      {"lora.preset": "minimal-qv"}]})
    RunQueue(tmp_path / "runs").add_study(study)
    rows = compare.read_runs(sorted(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")))
    assert len(rows) == 3
    diffs = dict(compare.config_differences(rows))
    targets = {r.config["lora.target_modules"] for r in rows}
    assert list(diffs) == ["lora.target_modules"] and targets == {",".join(listed), "q_proj,v_proj"}


def test_lora_settings_all_lora_runs_share_are_no_difference_beside_full_fine_tuning(tmp_path):
    """A study of LoRA r=4, r=16, full and head-only listed lora.dropout, bias, rslora, dora and a 'lora.preset - - - -'
    row as differences (a QA walk); the rank and the modules still show."""
    from loratui.core.queue import RunQueue
    from loratui.core.study import parse_study

    study = parse_study({"study": "c", "config": {"model": {"name": "m", "task": "seq-cls"},
                                                  "data": {"format": "classification"}},
                         "variants": [{"lora.r": 4}, {"lora.r": 16}, {"method.kind": "full"},
                                      {"method.kind": "head-only"}]})
    RunQueue(tmp_path / "runs").add_study(study)
    rows = compare.read_runs(sorted(p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")))
    diffs = dict(compare.config_differences(rows))
    assert [k for k in diffs if k.startswith("lora.")] == ["lora.r", "lora.alpha", "lora.target_modules"], diffs
    assert "method.kind" in diffs


def test_final_eval_on_more_rows_is_the_table_figure_not_the_curve_end(tmp_path):
    """A curve on a slice of the held-out set (data.eval_samples) ends at its last slice point; the final
    evaluation on all rows is the run's final figure (Compare's table, the Monitor's text), not a last-step jump
    drawn onto the line. A final evaluation at a new step on the same rows continues the curve."""
    import shutil

    from loratui.ui.widgets.run_state import RunModel

    def run_with(name: str, final: dict, *, last_slice: bool = True) -> tuple[Path, list[dict]]:
        run = tmp_path / name
        shutil.copytree(RUNS / "smollm2-demo", run)
        events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
        for ev in events:
            if ev["kind"] == "eval":
                ev["examples"] = 50
        if not last_slice:  # the run's last step was not an evaluation step: the final one is its own point
            events = [ev for ev in events if not (ev["kind"] == "eval" and ev["step"] == 200)]
        at = next(i for i, ev in enumerate(events) if ev["kind"] == "finished")
        events.insert(at, {"kind": "eval", "time": events[at]["time"], "step": 200, "final": True, **final})
        events[at + 1]["eval_loss"] = final["eval_loss"]
        (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        return run, events

    sliced, sliced_events = run_with("sliced", {"eval_loss": 1.2, "examples": 400})
    (row,) = compare.read_runs([sliced])
    assert len(row.eval_curve) == 8 and row.eval_curve[-1] == (200, pytest.approx(1.0324))
    assert row.final_eval_loss == pytest.approx(1.2) and row.final_metric == pytest.approx(1.2)
    model = RunModel()
    model.apply(sliced_events)
    xs, ys = model.snapshot().eval_points
    assert len(xs) == 8 and ys[-1] == pytest.approx(1.0324)
    assert model.snapshot().final_eval["eval_loss"] == pytest.approx(1.2)

    same_rows, same_events = run_with("same-rows", {"eval_loss": 1.01, "examples": 50}, last_slice=False)
    (row,) = compare.read_runs([same_rows])
    assert len(row.eval_curve) == 8 and row.eval_curve[-1] == (200, pytest.approx(1.01))
    model = RunModel()
    model.apply(same_events)
    assert model.snapshot().eval_points[1][-1] == pytest.approx(1.01)
