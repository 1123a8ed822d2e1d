"""Real tiny runs through the engine: every CPU method, events, adapters, stop/resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from loratui.core import runs
from loratui.cli import main as cli_main
from loratui.core.config import RunConfig

SAMPLES = Path(__file__).resolve().parent.parent / "loratui" / "samples"


def write_config(tmp_path: Path, model_dir: Path, runs_dir: Path, **sections) -> Path:
    data = {
        "model": {"name": str(model_dir)},
        "lora": {"r": 4, "alpha": 8},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 48,
                 "validation_fraction": 0.25, "max_length": 96},
        "train": {"max_steps": 6, "batch_size": 4, "lr": 1e-3, "logging_steps": 2, "eval_steps": 3,
                  "save_steps": 3},
        "output": {"runs_dir": str(runs_dir), "name": "r1"},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def kinds(run: runs.RunDir) -> list[str]:
    return [e["kind"] for e in run.events()]


def test_lora_run_on_tiny_llama_writes_events_and_adapter(tmp_path, tiny_llama, runs_dir, capsys):
    cfg = write_config(tmp_path, tiny_llama, runs_dir)
    assert cli_main(["train", str(cfg)]) == 0
    run = runs.RunDir(runs_dir / "r1")
    ks = kinds(run)
    assert ks.index("started") < ks.index("step") < ks.index("finished")
    assert "eval" in ks and "checkpoint" in ks
    started = next(e for e in run.events() if e["kind"] == "started")
    assert 0 < started["trainable_params"] < started["total_params"]
    assert started["max_steps"] == 6
    steps = [e for e in run.events() if e["kind"] == "step"]
    assert steps[-1]["step"] == 6 and steps[-1]["tokens_per_s"] > 0
    evals = [e for e in run.events() if e["kind"] == "eval"]
    assert all(e["perplexity"] > 1 for e in evals)
    # the last scheduled eval falls on the final step: the finished event and the summary still carry it
    finished = next(e for e in run.events() if e["kind"] == "finished")
    assert evals[-1]["step"] == 6 and finished["eval_loss"] == evals[-1]["eval_loss"]
    assert runs.summarize(run).final_eval["eval_loss"] == evals[-1]["eval_loss"]
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((run.adapter_dir / "loratui.json").read_text())["method"] == "lora"
    assert run.state() == "finished"
    out = capsys.readouterr().out
    assert "step 6/6" in out and "finished at step 6" in out
    # the saved config reproduces the run
    assert runs.RunDir(run.path).config().lora.r == 4


def test_eval_samples_cuts_the_curve_and_the_final_eval_uses_every_held_out_example(tmp_path, tiny_llama, runs_dir,
                                                                                    capsys):
    """data.eval_samples: the base model and the in-training evals see the first N held-out examples; the whole
    held-out set is evaluated once at the end, and that is the finished event's (and the summary's) eval."""
    from loratui.train import engine as engine_mod

    seen: list[int] = []
    original = engine_mod.Engine._build_trainer

    def spy(self, model, precision, train_ds, val_ds):
        trainer = original(self, model, precision, train_ds, val_ds)
        evaluate = trainer.evaluate

        def counting(eval_dataset=None, *args, **kwargs):
            seen.append(len(eval_dataset if eval_dataset is not None else trainer.eval_dataset))
            return evaluate(eval_dataset, *args, **kwargs)

        trainer.evaluate = counting
        return trainer

    cfg = write_config(tmp_path, tiny_llama, runs_dir, data={"eval_samples": 5})
    engine_mod.Engine._build_trainer = spy
    try:
        assert cli_main(["train", str(cfg)]) == 0
    finally:
        engine_mod.Engine._build_trainer = original
    run = runs.RunDir(runs_dir / "r1")
    started = next(e for e in run.events() if e["kind"] == "started")
    n_all = started["final_eval_examples"]
    assert started["eval_examples"] == 5 and n_all == 12  # 48 examples, a quarter held out
    evals = [e for e in run.events() if e["kind"] == "eval"]
    # steps 0 (base model), 3 and 6 on the slice, then step 6 again on all 12
    assert [(e["step"], e["examples"]) for e in evals] == [(0, 5), (3, 5), (6, 5), (6, 12)]
    assert seen == [5, 5, 5, 12]
    assert evals[-1]["final"] is True and not any(e.get("final") for e in evals[:-1])
    assert evals[-1]["eval_loss"] != evals[-2]["eval_loss"]
    finished = next(e for e in run.events() if e["kind"] == "finished")
    assert finished["eval_loss"] == evals[-1]["eval_loss"]
    summary = runs.summarize(run)
    assert summary.final_eval["eval_loss"] == evals[-1]["eval_loss"]
    assert "examples" not in summary.final_eval and "final" not in summary.final_eval
    out = capsys.readouterr().out
    assert "5 eval examples (all 12 at the end)" in out and "final eval on all 12 held-out examples" in out


def test_eval_samples_default_evaluates_everything_once_at_the_last_step(tmp_path, tiny_llama, runs_dir):
    cfg = write_config(tmp_path, tiny_llama, runs_dir, data={"eval_samples": 100})  # more than held out: all
    assert cli_main(["train", str(cfg)]) == 0
    evals = [e for e in runs.RunDir(runs_dir / "r1").events() if e["kind"] == "eval"]
    assert [(e["step"], e["examples"]) for e in evals] == [(0, 12), (3, 12), (6, 12)]


def test_adapter_reload_gives_the_same_outputs(tmp_path, tiny_llama, runs_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loratui.train.engine import Engine

    cfg = RunConfig.model_validate(yaml.safe_load(write_config(tmp_path, tiny_llama, runs_dir).read_text()))
    run = runs.create_run(cfg)
    engine = Engine(run, echo=lambda line: None)
    assert engine.run() == 0
    trained = engine.trainer.model.eval()
    fresh = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), str(run.adapter_dir))
    fresh.eval()
    ids = torch.tensor([[1, 500, 600, 700, 800, 2]])
    with torch.no_grad():
        a, b = trained(input_ids=ids).logits, fresh(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    # and the adapter changed the model
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, b, atol=1e-4)


@pytest.mark.parametrize("method, lora", [
    ("full", {}),
    ("lora", {"dora": True, "rslora": True, "target_modules": "all-linear", "dropout": 0.0}),
])
def test_other_causal_methods_run(tmp_path, tiny_llama, runs_dir, method, lora):
    cfg = write_config(tmp_path, tiny_llama, runs_dir, method={"kind": method}, lora=lora,
                       train={"max_steps": 3, "eval_steps": 3, "save_steps": 3})
    assert cli_main(["train", str(cfg)]) == 0
    run = runs.RunDir(runs_dir / "r1")
    started = next(e for e in run.events() if e["kind"] == "started")
    if method == "full":
        assert started["trainable_params"] == started["total_params"]
        assert (run.path / "model" / "config.json").is_file()
    else:
        cfg_json = json.loads((run.adapter_dir / "adapter_config.json").read_text())
        assert cfg_json["use_dora"] and cfg_json["use_rslora"]


def test_gpt2_conv1d_text_format_with_packing(tmp_path, tiny_gpt2, runs_dir):
    cfg = write_config(tmp_path, tiny_gpt2, runs_dir, lora={"preset": "gpt2"},
                       data={"source": "sample:text-sample.jsonl", "format": "text", "packing": True,
                             "max_samples": None, "validation_fraction": 0.2})
    assert cli_main(["train", str(cfg)]) == 0
    run = runs.RunDir(runs_dir / "r1")
    adapter_cfg = json.loads((run.adapter_dir / "adapter_config.json").read_text())
    assert set(adapter_cfg["target_modules"]) == {"c_attn", "c_proj"}
    assert adapter_cfg["fan_in_fan_out"] is True
    assert kinds(run)[-1] == "finished"


@pytest.mark.parametrize("method", ["lora", "head-only", "full"])
def test_bert_classification_methods_report_accuracy(tmp_path, tiny_bert, runs_dir, method):
    cfg = write_config(tmp_path, tiny_bert, runs_dir, model={"task": "seq-cls", "num_labels": 2},
                       method={"kind": method}, lora={"preset": "bert-qv"},
                       data={"source": "sample:sentiment.csv", "format": "classification", "max_samples": 64,
                             "validation_fraction": 0.25, "max_length": 48})
    assert cli_main(["train", str(cfg)]) == 0
    run = runs.RunDir(runs_dir / "r1")
    evals = [e for e in run.events() if e["kind"] == "eval"]
    assert evals and 0 <= evals[-1]["accuracy"] <= 1 and "f1" in evals[-1]
    started = next(e for e in run.events() if e["kind"] == "started")
    assert started["labels"] == ["negative", "positive"]
    if method == "head-only":
        assert started["trainable_params"] == 64 * 2 + 2


# -- bad input: one line naming the field and the fix, nothing created or touched ----------------------------

def _bad(tmp_path, capsys, runs_dir, cfg_path) -> str:
    before = sorted(p.name for p in runs_dir.iterdir())
    code = cli_main(["train", str(cfg_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err
    assert sorted(p.name for p in runs_dir.iterdir()) == before
    return err


def test_bad_inputs_fail_fast_with_one_line(tmp_path, tiny_llama, runs_dir, capsys):
    def bad(**sections) -> str:
        return _bad(tmp_path, capsys, runs_dir, write_config(tmp_path, tiny_llama, runs_dir, **sections))

    assert "model.name: no such model folder" in bad(model={"name": str(tmp_path / "nope")})
    err = bad(lora={"target_modules": ["q_proj", "query"]})
    assert "lora.target_modules: query not in this model" in err and "v_proj" in err
    assert "lora.r: must be a positive" in bad(lora={"r": 0})
    assert "lora.alpha: must be positive" in bad(lora={"alpha": -2})
    assert "lora.dropout: must be in [0, 1)" in bad(lora={"dropout": 1.5})
    err = bad(method={"kind": "qlora"})
    assert "method.kind: qlora needs a CUDA GPU" in err and err.endswith("(use method lora on this machine, or run "
                                                                          "on a GPU box)")  # no optimizer advice
    assert "method.kind: lora-8bit needs a CUDA GPU" in bad(method={"kind": "lora-8bit"})
    err = bad(train={"optimizer": "paged_adamw_8bit"})
    assert err.endswith("(use optimizer adamw_torch on this machine, or run on a GPU box)")
    # a speed lever asked for that this machine cannot run: said before any run folder exists (it made a failed run)
    assert "train.cuda_graphs on needs a CUDA GPU" in bad(train={"cuda_graphs": "on"})
    err = bad(train={"wide_loss_chunks": "on"})
    assert "train.wide_loss_chunks on needs Liger's fused cross-entropy" in err and "(set train.wide_loss_chunks: auto)" in err
    assert "data.source: no such file" in bad(data={"source": str(tmp_path / "missing.jsonl")})
    err = bad(data={"output_column": "answer"})
    assert "data.output_column" in err and "instruction" in err  # names the columns present
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"instruction": "", "input": "", "output": ""}\n')
    assert "data.source" in bad(data={"source": str(empty), "max_samples": None})
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text('{"instruction": "x", "output": \n not json')
    assert "data.source" in bad(data={"source": str(corrupt), "max_samples": None})
    assert "data.max_length: 4096 is above this model's limit of 512" in bad(data={"max_length": 4096})
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("lora:\n  rank: 8\n")
    assert "lora.rank: unknown key 'rank'" in _bad(tmp_path, capsys, runs_dir, unknown)


def test_existing_run_folder_is_never_overwritten(tmp_path, tiny_llama, runs_dir, capsys):
    existing = runs_dir / "r1"
    existing.mkdir()
    (existing / "events.jsonl").write_text('{"kind": "started"}\n')
    (existing / "config.yaml").write_text("model: {}\n")
    err = _bad(tmp_path, capsys, runs_dir, write_config(tmp_path, tiny_llama, runs_dir))
    assert "output.name" in err and "already holds a run" in err and "--resume" in err
    assert (existing / "events.jsonl").read_text() == '{"kind": "started"}\n'
    finished = '{"kind": "started"}\n{"kind": "finished", "step": 3, "adapter": "adapter"}\n'
    (existing / "events.jsonl").write_text(finished)  # a finished run cannot be resumed: no command that fails
    err = _bad(tmp_path, capsys, runs_dir, write_config(tmp_path, tiny_llama, runs_dir))
    assert err.endswith("already holds a run (r1 finished: choose another output.name)") and "--resume" not in err
    assert (existing / "events.jsonl").read_text() == finished


# -- detached engine: stop gracefully, then resume ----------------------------------------------------------

def test_stop_then_resume_continues_from_the_checkpoint(detached_stalled_then_stopped):
    run, seen = detached_stalled_then_stopped  # a detached engine (frozen and thawed on the way: test_watchdog)
    assert seen["own_session"]  # its own session: survives the app and an SSH hangup
    assert seen["five_steps"], seen["log"]
    assert seen["stop_sent"]
    assert seen["after"] == "stopped"
    stopped = [e for e in run.events() if e["kind"] == "stopped"][-1]
    assert stopped["step"] >= 5
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    ckpt = run.latest_checkpoint()
    assert ckpt is not None and int(ckpt.name.split("-")[1]) == stopped["step"]
    # resume with a reachable end: the run continues from the saved step, not from zero
    data = yaml.safe_load(run.config_path.read_text())
    data["train"]["max_steps"] = stopped["step"] + 4
    run.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert cli_main(["train", "--resume", str(run.path)]) == 0
    events = run.events()
    resumed = next(e for e in events if e["kind"] == "resumed")
    assert resumed["step"] == stopped["step"]
    later_steps = [e["step"] for e in events[events.index(resumed):] if e["kind"] == "step"]
    assert min(later_steps) > stopped["step"] and max(later_steps) == stopped["step"] + 4
    assert run.state() == "finished"
    assert runs.summarize(run).state == "finished"


def test_crashed_run_is_detected(tmp_path, runs_dir):
    run = runs.RunDir(runs_dir / "ghost")
    run.path.mkdir()
    run.config_path.write_text("model: {}\n")
    run.write_status(state="running", pid=999999)
    assert run.state() == "crashed"
    assert not runs.stop_run(run)


def test_the_eta_counts_the_final_evaluation_on_every_held_out_example(tmp_path, tiny_llama, runs_dir, monkeypatch):
    """With the curve on a slice (data.eval_samples), the whole held-out set is evaluated after the last step: the
    ETA counts that evaluation (at the last step it said 0 while the demo's final eval still took 18 s)."""
    import transformers.trainer

    # each evaluation takes 1 s (the Trainer's own figure), so the final one on 12 examples takes 12 / 5 s
    monkeypatch.setattr(transformers.trainer, "speed_metrics",
                        lambda split, start_time, num_samples=None, num_steps=None, num_tokens=None:
                        {f"{split}_runtime": 1.0})
    cfg = write_config(tmp_path, tiny_llama, runs_dir, data={"eval_samples": 5})
    assert cli_main(["train", str(cfg)]) == 0
    steps = [e for e in runs.RunDir(runs_dir / "r1").events() if e["kind"] == "step"]
    assert steps[-1]["step"] == 6 and steps[-1]["eta_s"] == 2.4
