"""Merging an adapter into its base: verified outputs, atomic output folder, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from loratui.core import runs
from loratui.core.config import RunConfig
from loratui.train.engine import Engine
from loratui.core.checkpoints import folder_bytes
from loratui.train.merge import MergeError, merge_adapter


def _train(tmp_path_factory, model_dir: Path, **extra) -> Path:
    runs_dir = tmp_path_factory.mktemp("merge-runs")
    data = {"model": {"name": str(model_dir)}, "lora": {"r": 4, "alpha": 16, "dropout": 0.0},
            "data": {"source": "sample:contacts-json.jsonl", "max_samples": 16, "validation_fraction": 0.0,
                     "max_length": 64},
            "train": {"max_steps": 3, "batch_size": 4, "lr": 0.05},
            "output": {"runs_dir": str(runs_dir), "name": "m"}}
    for section, values in extra.items():
        data.setdefault(section, {}).update(values)
    run = runs.create_run(RunConfig.model_validate(data))
    assert Engine(run, echo=lambda line: None).run() == 0
    return run.adapter_dir


@pytest.fixture(scope="module")
def llama_adapter(tmp_path_factory, tiny_llama) -> Path:
    return _train(tmp_path_factory, tiny_llama)


def test_merge_reproduces_the_adapter_and_reloads(tmp_path, llama_adapter):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    steps = []
    out = tmp_path / "merged"
    result = merge_adapter(llama_adapter, out, dtype="fp32", progress=lambda s, f: steps.append(s))
    assert steps[0] == "loading base model" and steps[-1] == "done"
    assert result["max_diff"] < 1e-4
    assert result["size_bytes"] == folder_bytes(out) > 0
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert AutoTokenizer.from_pretrained(str(out)).eos_token
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temporary folder left


def test_merge_refuses_a_non_empty_output_and_keeps_it(tmp_path, llama_adapter):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(MergeError, match="already exists and is not empty"):
        merge_adapter(llama_adapter, out)
    assert (out / "keep.txt").read_text() == "mine"


def test_interrupted_merge_leaves_nothing_half_written(tmp_path, llama_adapter):
    def progress(step, frac):
        if step == "verifying":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_adapter(llama_adapter, tmp_path / "out", dtype="fp32", progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_not_an_adapter_is_a_clear_error(tmp_path):
    with pytest.raises(MergeError, match="adapter: .* holds no adapter_config.json"):
        merge_adapter(tmp_path, tmp_path / "out")


def test_cli_jsonl_contract(tmp_path, llama_adapter, capsys):
    """The app's merge wizard reads these lines. Run from another folder with a relative adapter path: the merged
    folder still records where the adapter is (the Playground and the export read it from elsewhere)."""
    rel = os.path.relpath(llama_adapter, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "loratui", "merge", rel, "m", "--dtype", "fp32", "--jsonl"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert lines[0]["kind"] == "progress" and lines[-1]["kind"] == "done"
    assert Path(tmp_path, lines[-1]["output"]).resolve() == (tmp_path / "m").resolve()
    assert lines[-1]["max_diff"] < 1e-4
    # the time the user waited (the process's life, libraries loaded) is at least the merge's own steps
    assert lines[-1]["wall_seconds"] >= lines[-1]["seconds"] > 0
    meta = json.loads((tmp_path / "m" / "loratui-merge.json").read_text())
    assert meta["adapter"] == str(Path(llama_adapter).resolve())
    from loratui.cli import main as cli_main

    capsys.readouterr()
    code = cli_main(["merge", str(tmp_path), str(tmp_path / "x"), "--jsonl"])  # in this process: no second import
    failed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code != 0 and failed["kind"] == "failed" and failed["message"].startswith("adapter: ")


@pytest.fixture(scope="module")
def bert_classifier(tmp_path_factory, tiny_bert) -> Path:
    return _train(tmp_path_factory, tiny_bert, model={"task": "seq-cls", "num_labels": 2},
                  lora={"preset": "bert-qv"},
                  data={"source": "sample:sentiment.csv", "format": "classification", "max_samples": 32})


def test_classifier_adapter_merges_with_its_head(tmp_path, bert_classifier):
    from transformers import AutoModelForSequenceClassification

    adapter = bert_classifier
    result = merge_adapter(adapter, tmp_path / "cls", dtype="fp32")
    assert result["task"] == "seq-cls" and result["max_diff"] < 1e-4
    merged = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "cls"))
    assert merged.config.num_labels == 2 and merged.config.id2label[1] == "positive"


def test_generate_on_a_classification_adapter_predicts_the_label(tmp_path, bert_classifier, capsys):
    """Issue 9 defect 2: `loratui generate ADAPTER "text"` on the tutorial's sentiment adapter ended in a traceback
    ('BertForSequenceClassification' object has no attribute 'generate')."""
    from loratui.cli import main as cli_main

    # `loratui generate` in this process (no second torch import): a traceback would fail the test here
    code = cli_main(["generate", str(bert_classifier), "a", "wonderful", "film"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    line = out.strip().splitlines()[-1]
    assert line.split(" (")[0] in ("positive", "negative") and "%" in line, line
    assert "Traceback" not in err
    merged = tmp_path / "cls"
    merge_adapter(bert_classifier, merged, dtype="fp32")
    from loratui.train.generate import generate

    assert generate(str(merged), "a wonderful film").split(" (")[0] in ("positive", "negative")


def test_merge_check_is_readable_and_judged_per_dtype(tmp_path, llama_adapter):
    """Issue 9 defect 6: 'max difference 1.19' with a check mark for bf16 told the user nothing."""
    from loratui.core.merge_check import DEFAULT_MERGE_DTYPE, TOLERANCE

    for dtype in ("fp32", "bf16"):
        result = merge_adapter(llama_adapter, tmp_path / dtype, dtype=dtype)
        check = result["check"]
        assert check["ok"] and check["relative_diff"] <= TOLERANCE[dtype] and check["agree"] >= 0.9 * check["total"]
        assert check["summary"].startswith("✔ merged model matches the adapter: relative difference ")
        assert f"({dtype} rounding allows up to " in check["summary"] and "top token the same at" in check["summary"]
    proc = subprocess.run([sys.executable, "-m", "loratui", "merge", "--help"], capture_output=True, text=True)
    assert f"default: {DEFAULT_MERGE_DTYPE}" in " ".join(proc.stdout.split())


def test_cli_merge_whose_check_fails_says_so_and_exits_1(tmp_path, monkeypatch, capsys):
    """QA: the headline must not contradict the check; scripts see the failure in the exit code, the model stays."""
    from loratui.cli import main as cli_main
    from loratui.core.merge_check import judge
    from loratui.train import merge as merge_mod

    result = {"output": str(tmp_path / "m"), "size_bytes": 2**20, "max_diff": 1.5, "seconds": 1.0, "dtype": "bf16",
              "base_model": "b", "task": "causal-lm", "check": judge(0.35, 20, 20, "bf16")}
    monkeypatch.setattr(merge_mod, "merge_adapter", lambda *a, **k: dict(result))
    assert cli_main(["merge", str(tmp_path), str(tmp_path / "m")]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("⚠ merged, but the check failed: ") and "✖ merged model differs" in out
    assert "kept in" in err and "merge again in fp32 or fp16" in err
    assert cli_main(["merge", str(tmp_path), str(tmp_path / "m"), "--jsonl"]) == 1
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["kind"] == "done" and done["check"]["ok"] is False


def test_the_wizard_reports_the_time_the_user_waited():
    """Issue 19 item 18: 'time 2.3 s' for a 35 s merge. The wizard's result reads the process's whole time and says
    how much of it was the merge."""
    from rich.console import Console

    from loratui.ui.screens.merge_parts import merged_table

    console = Console(width=100, record=True)
    console.print(merged_table({"output": "/m", "size_bytes": 2**20, "seconds": 2.3, "wall_seconds": 35.0}, None,
                               Path("/m")))
    text = console.export_text()
    assert "35.0 s (2.3 s merging, the rest loading libraries)" in text


def test_a_merge_at_the_wrong_scale_fails_its_check(tmp_path, llama_adapter, monkeypatch):
    """The check must catch a wrong merge, not only pass a right one: the adapter folded in at half its scale (as a
    wrong alpha/r would) is flagged, in bf16 as in fp32 (the check compares in fp32 on the stored weights)."""
    from loratui.train import merge

    load = merge.load_adapter_model

    def half_scale(*args, **kwargs):
        model, tokenizer, loaded = load(*args, **kwargs)
        unload = model.merge_and_unload

        def wrong_merge(*a, **k):
            for module in model.modules():
                if isinstance(getattr(module, "scaling", None), dict):
                    module.scaling = {name: s * 0.5 for name, s in module.scaling.items()}
            return unload(*a, **k)

        model.merge_and_unload = wrong_merge
        return model, tokenizer, loaded

    monkeypatch.setattr(merge, "load_adapter_model", half_scale)
    for dtype in ("fp32", "bf16"):
        check = merge_adapter(llama_adapter, tmp_path / dtype, dtype=dtype)["check"]
        assert check["ok"] is False and check["relative_diff"] > check["tolerance"], (dtype, check)
