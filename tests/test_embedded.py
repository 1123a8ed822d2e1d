"""Real runs on the embedded models (what a new user gets out of the box)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from loratui.core import runs
from loratui.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent


def _events(run, kind):
    return [e for e in run.events() if e["kind"] == kind]


def test_smollm2_demo_learns_the_format(tmp_path, runs_dir):
    """The demo config, shortened: eval loss on held-out contacts falls, and the answer changes."""
    data = yaml.safe_load((REPO / "sample_configs" / "smollm2-demo.yaml").read_text())
    # 8 held-out contacts (within the config's eval_samples: no separate final pass), 4 steps of 4 (measured: the
    # eval loss is 0.27x the base model's at step 4, 0.32x at step 3; the bar is 0.7x)
    data["data"].update({"max_samples": 64, "validation_file": None, "validation_fraction": 0.125})
    data["train"].update({"max_steps": 4, "batch_size": 4, "eval_steps": 4, "save_steps": 4, "logging_steps": 2,
                          "lr": 0.001, "warmup_steps": 1})
    data["output"] = {"runs_dir": str(runs_dir), "name": "demo"}
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert cli_main(["train", str(cfg)]) == 0
    run = runs.RunDir(runs_dir / "demo")
    evals = _events(run, "eval")
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 4
    assert evals[-1]["eval_loss"] < 0.7 * evals[0]["eval_loss"], evals
    started = _events(run, "started")[0]
    assert started["model"] == "smollm2-135m-instruct" and started["trainable_params"] == 4_884_480

    from loratui.train.generate import complete, load_for_inference

    prompt = ("Extract the contact as JSON with keys name, city, email.\n\n"
              "Hello from Ines Duarte in Porto, reach me at ines.duarte@example.com")
    tuned, tok = load_for_inference(str(run.adapter_dir))
    after = complete(tuned, tok, [prompt], max_new_tokens=16)[0]
    with tuned.disable_adapter():
        before = complete(tuned, tok, [prompt], max_new_tokens=16)[0]
    assert after != before
    assert after.startswith('{"name": ')


def test_minilm_sentiment_lora_beats_chance(tmp_path, runs_dir):
    data = yaml.safe_load((REPO / "sample_configs" / "minilm-sentiment.yaml").read_text())
    data["data"].update({"max_samples": 1280, "validation_file": "sample:sentiment-eval.csv", "max_length": 48})
    data["train"].update({"max_steps": 30, "batch_size": 16, "eval_steps": 30, "save_steps": 30, "logging_steps": 5})
    data["output"] = {"runs_dir": str(runs_dir), "name": "sent"}
    cfg = tmp_path / "sent.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert cli_main(["train", str(cfg)]) == 0
    run = runs.RunDir(runs_dir / "sent")
    evals = _events(run, "eval")
    assert evals[0]["step"] == 0 and evals[0]["accuracy"] < 0.7  # an untrained head is near chance
    assert evals[-1]["accuracy"] > 0.8, evals[-1]
    meta = json.loads((run.adapter_dir / "loratui.json").read_text())
    assert meta["labels"] == ["negative", "positive"]
