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
    assert "| final eval loss | 1.0324 | 1.4617 | - |" in md
    assert "| train.batch_size | 8 | 8 | 64 |" in md
    for chart in ("## final eval loss", "## training time", "## trainable params", "## peak GPU memory",
                  "## eval loss by step"):
        assert chart in md
    assert "smollm2-demo     │" in md and "█" in md  # bars drawn as text
    assert "2.3964 (step 25) -> 1.0324 (step 200)" in md


def test_text_bars_use_a_log_scale_for_wide_ranges():
    values = [22_713_986.0, 74_498.0, 770.0]
    assert compare.needs_log(values) and not compare.needs_log([0.7, 0.99])
    text = compare.text_bars(["full", "lora", "head"], values, width=20, log=True)
    full, lora, head = (line.count("█") for line in text.splitlines())
    assert full == 20 and 0 < head < lora < full
    assert "22.7M" in text and "770" in text
