"""Preference tuning (issue 20): method.objective dpo, orpo, kto through the real engine on a tiny random Llama;
the engine's numbers against TRL's own trainers used as their docs show; stop and resume; bad preference data in one
line each; the config's checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from loratui.core import runs
from loratui.core.config import RunConfig, config_from_dict
from loratui.core.errors import ConfigError, DataError
from loratui.core.preference import REWARD_KEYS

SAMPLE = Path(__file__).resolve().parents[1] / "loratui" / "samples" / "contacts-json.jsonl"


def _pairs(n: int, start: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[start:start + n]]
    return [{"prompt": f"{r['instruction']}\n\n{r['input']}", "chosen": r["output"],
             "rejected": f"Sure! Here is the contact: {r['input']}"} for r in rows]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(tmp_path, tiny_llama, name, objective="dpo", rows=None, method=None, data=None, **train):
    src = _write(tmp_path / f"{name}.jsonl", rows if rows is not None else _pairs(16))
    cfg = {
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4},
        "method": {"objective": objective, **(method or {})},
        "data": {"source": str(src), "format": "preference", "validation_fraction": 0.25, "max_length": 128,
                 **(data or {})},
        "train": {"max_steps": 2, "batch_size": 2, "lr": 1e-3, "logging_steps": 1, "eval_steps": 2,
                  "save_steps": 2, **train},
        "output": {"runs_dir": str(tmp_path / "runs"), "name": name},
    }
    return runs.create_run(RunConfig.model_validate(cfg))


def _events(run, kind):
    return [{k: v for k, v in e.to_dict().items() if v is not None} for e in run.events() if e["kind"] == kind]


# -- the engine ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_each_objective_trains_through_the_engine(tmp_path, tiny_llama, objective):
    from loratui.train.engine import Engine

    lines: list[str] = []
    run = _run(tmp_path, tiny_llama, objective, objective)
    assert Engine(run, echo=lines.append).run() == 0, lines
    steps, evals = _events(run, "step"), _events(run, "eval")
    assert [s["step"] for s in steps] == [1, 2] and all(math.isfinite(s["loss"]) for s in steps)
    # the rewards beside the loss: every key on the evaluations, and on the steps of the paired objectives (kto's
    # step logs only the side its micro-batch held)
    for ev in evals:
        assert set(REWARD_KEYS) <= set(ev) or objective == "kto" and {"rewards/chosen", "rewards/rejected"} <= set(ev)
        assert "perplexity" not in ev  # exp(a preference loss) is no perplexity
    if objective != "kto":
        assert all(set(REWARD_KEYS) <= set(s) for s in steps)
        assert 0 <= steps[-1]["rewards/accuracies"] <= 1
    last = evals[-1]
    assert last["step"] == 2
    # the update moved the policy away from where it started: the rewards are no longer all zero (dpo, kto), and
    # the chosen answer gained on the rejected one
    assert last["rewards/chosen"] != evals[0]["rewards/chosen"]
    ref = "the base model (adapter off)" if objective != "orpo" else "none (orpo is reference-free)"
    assert any(f"the reference is {ref}" in line for line in lines), lines
    # the adapter and every checkpoint hold the trained adapter only (not TRL's frozen reference copy), whole
    assert (run.adapter_dir / "adapter_model.safetensors").is_file() and not (run.adapter_dir / "ref").exists()
    ck = run.path / "checkpoints" / "checkpoint-2"
    assert (ck / "adapter_model.safetensors").is_file() and (ck / "optimizer.pt").is_file()
    assert not (ck / "ref").exists()
    assert json.loads((run.adapter_dir / "adapter_config.json").read_text())["r"] == 4


def _trl_docs_way(objective, model_dir, adapter, train_rows, eval_rows, out, batch, lr):
    """TRL's own trainer as its docs show it: a PEFT model, no ref_model, conversational rows, one step."""
    from datasets import Dataset
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loratui.train.preference import trl_classes

    trainer_cls, config_cls = trl_classes(objective)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.pad_token = tok.pad_token or tok.eos_token  # as TRL's ORPO docs do
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter, is_trainable=True)

    def chat(rows):
        return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                   "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                   "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])

    args = config_cls(output_dir=str(out), max_steps=1, per_device_train_batch_size=batch,
                      per_device_eval_batch_size=batch, learning_rate=lr, lr_scheduler_type="cosine",
                      optim="adamw_torch", gradient_checkpointing=False, bf16=False, use_cpu=True, beta=0.1,
                      max_length=128, report_to="none", save_strategy="no", logging_steps=1, seed=42, data_seed=42)
    trainer = trainer_cls(model=model, args=args, train_dataset=chat(train_rows), eval_dataset=chat(eval_rows),
                          processing_class=tok)
    trainer.train()
    return trainer.evaluate()


@pytest.fixture(scope="module")
def start_adapter(tmp_path_factory, tiny_llama):
    """A LoRA adapter with non-zero B on the tiny Llama (an 'SFT run's'), so the policy differs from the base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("sft-adapter")
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(out)
    return out


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_loss_and_rewards_match_trls_own_trainer(tmp_path, tiny_llama, start_adapter, objective):
    """The same adapter, the same rows (one batch of all four), one step: the held-out loss and rewards are TRL's."""
    from loratui.train.engine import Engine

    train_rows, eval_rows = _pairs(4), _pairs(4, start=100)
    val = _write(tmp_path / "val.jsonl", eval_rows)
    run = _run(tmp_path, tiny_llama, f"ours-{objective}", objective, rows=train_rows,
               method={"start_from": str(start_adapter)}, data={"validation_file": str(val)},
               max_steps=1, batch_size=4, eval_steps=1, eval_on_start=False, save_steps=1)
    assert Engine(run, echo=lambda line: None).run() == 0
    ours = [e for e in _events(run, "eval") if e["step"] == 1][-1]
    theirs = _trl_docs_way(objective, str(tiny_llama), str(start_adapter), train_rows, eval_rows,
                           tmp_path / "trl", batch=4, lr=1e-3)
    assert ours["eval_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-4, abs=1e-6)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        if f"eval_{key}" in theirs:
            assert ours[key] == pytest.approx(theirs[f"eval_{key}"], rel=1e-4, abs=1e-6), key
    # the step moved the policy: a metric that cannot differ from its start would prove nothing
    assert theirs["eval_rewards/chosen"] != 0


def test_a_stopped_dpo_run_resumes_on_its_schedule(tmp_path, tiny_llama):
    """Stopped after step 3 of 6 and resumed: steps 4 to 6 have the learning rates and losses of a run never
    stopped."""
    from loratui.train.engine import Engine

    rows = _pairs(24)
    whole = _run(tmp_path, tiny_llama, "whole", rows=rows, data={"validation_fraction": 0}, max_steps=6,
                 save_steps=1, scheduler="linear")
    assert Engine(whole, echo=lambda line: None).run() == 0
    parts = _run(tmp_path, tiny_llama, "parts", rows=rows, data={"validation_fraction": 0}, max_steps=6,
                 save_steps=1, scheduler="linear")
    engine = Engine(parts, echo=lambda line: None)

    def echo(line):  # the stop request a signal would make, after step 2's line: the run stops at step 3
        if line.startswith("step 2/"):
            engine.stop_request.stop = True

    engine.echo = echo
    assert engine.run() == 0
    stopped = _events(parts, "stopped")
    assert stopped and stopped[-1]["step"] == 3
    assert Engine(parts, resume=True, echo=lambda line: None).run() == 0
    a = {s["step"]: s for s in _events(whole, "step")}
    b = {s["step"]: s for s in _events(parts, "step")}
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert b[step]["lr"] == pytest.approx(a[step]["lr"], rel=1e-9)
        assert b[step]["loss"] == pytest.approx(a[step]["loss"], rel=1e-5)
        assert b[step]["rewards/margins"] == pytest.approx(a[step]["rewards/margins"], rel=1e-4, abs=1e-7)
    assert _events(parts, "finished")[-1]["step"] == 6


def test_a_continued_adapter_s_share_counts_the_policy_only(tmp_path, tiny_llama, start_adapter):
    """A QA walk: Compare gave a DPO run continuing an adapter 3.39% trainable, the same adapter in an SFT run 3.5%:
    TRL's frozen reference copy of the adapter was counted in the total. It is not part of the model that trains."""
    from loratui.core.compare_rows import read_run
    from loratui.train.engine import Engine

    start = {"start_from": str(start_adapter)}
    dpo = _run(tmp_path, tiny_llama, "dpo-continued", rows=_pairs(4), method=start, max_steps=1,
               data={"validation_fraction": 0})
    sft = _run(tmp_path, tiny_llama, "sft-continued", "sft", rows=_pairs(4), method=start, max_steps=1,
               data={"format": "alpaca", "instruction_column": "prompt", "output_column": "chosen",
                     "validation_fraction": 0})
    lines: list[str] = []
    assert Engine(dpo, echo=lines.append).run() == 0, lines
    assert any("the reference is the adapter it started from" in line for line in lines), lines
    assert Engine(sft, echo=lines.append).run() == 0, lines
    counts = {r.name: (r.trainable, r.total) for r in (read_run(dpo.path), read_run(sft.path))}
    assert counts["dpo-continued"] == counts["sft-continued"], counts
    assert read_run(dpo.path).share == read_run(sft.path).share
    meta = [json.loads((r.path / "adapter" / "loratui.json").read_text()) for r in (dpo, sft)]
    assert meta[0]["trainable_params"] == meta[1]["trainable_params"]
    assert meta[0]["total_params"] == meta[1]["total_params"]


# -- the data -----------------------------------------------------------------------------------------------------

def _prepare(tmp_path, tiny_llama, rows, objective="dpo", **data):
    from loratui.train.data import load_splits
    from loratui.train.data.preference import prepare_splits
    from loratui.train.models import load_tokenizer

    cfg = RunConfig.model_validate({
        "model": {"name": str(tiny_llama)}, "method": {"objective": objective},
        "data": {"source": str(_write(tmp_path / "rows.jsonl", rows)), "format": "preference",
                 "validation_fraction": 0, "max_length": 128, **data},
        "train": {"batch_size": 2}})
    train, val = load_splits(cfg)
    return prepare_splits(cfg, load_tokenizer(cfg), train, val)


GOOD = {"prompt": "Extract the contact.", "chosen": '{"name": "Ann"}', "rejected": "Sure!"}


@pytest.mark.parametrize("rows, objective, field, says", [
    ([{"prompt": "p", "chosen": "a"}], "dpo", "data.rejected_column", "needs column 'rejected'"),
    ([GOOD, {**GOOD, "chosen": "  "}], "dpo", "data.chosen_column", "row 2: 'chosen' is empty"),
    ([GOOD, {**GOOD, "rejected": None}, {**GOOD, "rejected": None}], "dpo", "data.rejected_column",
     "row 2: 'rejected' is missing (2 of 3 rows)"),
    ([GOOD, {**GOOD, "rejected": GOOD["chosen"]}], "dpo", "data.chosen_column",
     "rows.jsonl row 2: 'chosen' and 'rejected' are the same answer"),
    ([{**GOOD, "prompt": ""}], "orpo", "data.prompt_column", "row 1: 'prompt' is empty"),
    ([{**GOOD, "chosen": [{"role": "user", "content": "hi"}]}], "dpo", "data.chosen_column",
     "an answer is the assistant's"),
    ([{"prompt": "p", "completion": "a", "label": True}], "dpo", "method.objective", "unpaired rows"),
    ([{"prompt": "p", "completion": "a", "label": "maybe"}, {"prompt": "p", "completion": "b", "label": False}],
     "kto", "data.label_column", "row 1: 'label' is 'maybe'"),
])
def test_bad_preference_data_is_one_line(tmp_path, tiny_llama, rows, objective, field, says):
    with pytest.raises(DataError) as err:
        _prepare(tmp_path, tiny_llama, rows, objective)
    assert err.value.field == field and says in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_rows_over_max_length_are_counted_cut_or_dropped(tmp_path, tiny_llama):
    from loratui.train.data.preference import length_note

    long_answer = " ".join(["word"] * 200)
    rows = [GOOD, {**GOOD, "chosen": long_answer}, {**GOOD, "prompt": long_answer}, GOOD]
    train, _, stats = _prepare(tmp_path, tiny_llama, rows, max_length=64)
    assert (stats["train_examples"], stats["truncated_train"], stats["dropped_train"]) == (3, 1, 1)
    assert len(train) == 3 and stats["max_tokens"] == 64
    note = length_note(stats)
    assert "1 cut at 64 tokens" in note and "1 dropped (the prompt alone fills it)" in note
    with pytest.raises(DataError, match="every train row's prompt alone fills data.max_length"):
        _prepare(tmp_path, tiny_llama, [{**GOOD, "prompt": long_answer}], max_length=64)


def test_rows_become_conversations_with_the_system_prompt(tmp_path, tiny_llama):
    train, _, stats = _prepare(tmp_path, tiny_llama, [GOOD, {"prompt": [{"role": "user", "content": "q"}],
                                                             "chosen": "a", "rejected": "b"}],
                               system_prompt="Answer in JSON.")
    row = train[0]
    assert row["prompt"] == [{"role": "system", "content": "Answer in JSON."},
                             {"role": "user", "content": GOOD["prompt"]}]
    assert row["chosen"] == [{"role": "assistant", "content": GOOD["chosen"]}] and stats["paired"] is True
    unpaired, _, stats = _prepare(tmp_path, tiny_llama, [{"prompt": "p", "completion": "a", "label": "good"},
                                                         {"prompt": "p", "completion": "b", "label": 0}], "kto")
    assert [r["label"] for r in unpaired] == [True, False] and stats["paired"] is False


def test_a_bad_row_fails_the_run_in_one_line(tmp_path, tiny_llama):
    from loratui.train.engine import Engine

    run = _run(tmp_path, tiny_llama, "bad", rows=[*_pairs(5), {**_pairs(1)[0], "chosen": ""}])
    assert Engine(run, echo=lambda line: None).run() == 1
    failed = _events(run, "failed")[-1]
    assert failed["field"] == "data.chosen_column" and "row 6: 'chosen' is empty" in failed["message"]


def test_start_from_names_a_missing_adapter(tmp_path, tiny_llama):
    from loratui.train.engine import Engine

    run = _run(tmp_path, tiny_llama, "nostart", method={"start_from": str(tmp_path / "nowhere")})
    assert Engine(run, echo=lambda line: None).run() == 1
    failed = _events(run, "failed")[-1]
    assert failed["field"] == "method.start_from" and "does not exist" in failed["message"]


# -- the config ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, says", [
    ({"method": {"objective": "dpo"}}, "data.format: must be preference when method.objective is dpo"),
    ({"data": {"format": "preference"}}, "method.objective: must be dpo, orpo or kto"),
    ({"method": {"objective": "kto"}, "data": {"format": "preference"}, "train": {"batch_size": 1}},
     "train.batch_size: must be at least 2 for objective kto"),
    ({"method": {"objective": "orpo", "loss_type": "ipo"}, "data": {"format": "preference"}},
     "method.loss_type: a DPO setting"),
    ({"method": {"objective": "dpo", "kind": "full"}, "data": {"format": "preference"}},
     "method.kind: objective dpo needs a LoRA method"),
    ({"method": {"objective": "dpo", "loss_type": "exo_pair"}, "data": {"format": "preference"}},
     "method.label_smoothing: must be above 0"),
    ({"method": {"objective": "dpo", "beta": 0}, "data": {"format": "preference"}}, "method.beta:"),
    ({"method": {"objective": "simpo"}}, "method.objective: 'simpo' is not allowed"),
    ({"method": {"objective": "dpo"}, "data": {"format": "preference", "packing": "on"}}, "data.packing:"),
    ({"method": {"kind": "full", "start_from": "runs/sft"}}, "method.start_from: continues a LoRA adapter"),
])
def test_preference_config_errors_name_the_field(data, says):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value).startswith(says), str(err.value)


def test_preference_config_defaults_and_round_trip():
    cfg = config_from_dict({"method": {"objective": "dpo", "loss_type": "ipo"}, "data": {"format": "preference"}})
    assert (cfg.method.beta, cfg.method.label_smoothing, cfg.method.start_from) == (0.1, 0.0, None)
    assert config_from_dict(__import__("yaml").safe_load(cfg.to_yaml())) == cfg
    assert config_from_dict({}).method.objective == "sft"


# -- the Monitor --------------------------------------------------------------------------------------------------

def test_the_monitor_shows_the_rewards_beside_the_loss():
    from loratui.ui.widgets.monitor_text import stats_text
    from loratui.ui.widgets.run_state import RunModel

    model = RunModel()
    model.apply([{"kind": "started", "time": 1.0, "max_steps": 4, "method": "lora"},
                 {"kind": "step", "time": 2.0, "step": 1, "loss": 0.69, "rewards/chosen": 0.004,
                  "rewards/rejected": -0.001, "rewards/margins": 0.005, "rewards/accuracies": 0.5}])
    line = stats_text(model.snapshot(), "running").plain
    assert "loss 0.690" in line and "rewards +0.004/-0.001" in line and "margin +0.005" in line
    assert "pref acc 0.50" in line and "held-out" not in line
    # the held-out pairs' figures replace the training batch's once an evaluation has them
    model.apply([{"kind": "eval", "time": 3.0, "step": 2, "eval_loss": 0.68, "rewards/chosen": 0.01,
                  "rewards/rejected": -0.02, "rewards/margins": 0.03, "rewards/accuracies": 0.83},
                 {"kind": "step", "time": 4.0, "step": 3, "loss": 0.6, "rewards/margins": 0.9}])
    line = stats_text(model.snapshot(), "running").plain
    assert "margin +0.030" in line and "pref acc 0.83 held-out" in line
    # at 80 columns the preference accuracy and the margin stay; the rewards, lr and tok/s give way first (a QA
    # walk never saw 'pref acc' on an 80-column Monitor)
    narrow = stats_text(model.snapshot(), "running", width=78).plain
    assert "pref acc 0.83 held-out" in narrow and "margin +0.030" in narrow and "loss 0.600" in narrow, narrow
    # the title names the objective, as the Runs list does ('lora·dpo'; a QA walk read 'lora · fp32')
    from loratui.ui.widgets.monitor_text import title_text

    model.apply([{"kind": "started", "time": 5.0, "max_steps": 4, "method": "lora", "objective": "dpo"}])
    assert "lora·dpo" in title_text(model.snapshot(), "running").plain
    # a supervised run shows none of them
    sft = RunModel()
    sft.apply([{"kind": "step", "time": 2.0, "step": 1, "loss": 1.2}])
    assert "margin" not in stats_text(sft.snapshot(), "running").plain


def test_setup_previews_each_answer_after_its_prompt(tmp_path, tiny_llama):
    from loratui.train import data
    from loratui.train.models import load_tokenizer

    cfg = RunConfig.model_validate({
        "model": {"name": str(tiny_llama)}, "method": {"objective": "dpo"},
        "data": {"source": str(_write(tmp_path / "rows.jsonl", [GOOD])), "format": "preference"}})
    chosen, rejected = data.preview(cfg, load_tokenizer(cfg), n=3)
    assert (chosen.label, rejected.label) == ("chosen", "rejected")
    assert chosen.trained_text.startswith(GOOD["chosen"]) and GOOD["prompt"] not in chosen.trained_text
    assert GOOD["prompt"] in chosen.text and 0 < chosen.loss_tokens < chosen.n_tokens
