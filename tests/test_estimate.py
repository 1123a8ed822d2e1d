"""Exact parameter counts (as peft reports them) and the memory estimate's behaviour."""

from pathlib import Path

import pytest

from loratui.core.config import RunConfig
from loratui.train.estimate import count_params, estimate_memory, rule_of_thumb_gb
from bench_configs import bench_cfg


def _cfg(model_dir, **sections):
    cfg = RunConfig()
    cfg.model.name = str(model_dir)
    for section, values in sections.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    return cfg


def _real_count(cfg):
    """Load the real weights and wrap with peft, as a user following the tutorial would."""
    from loratui.train import models

    resolved = models.resolve_model(cfg.model)
    model = models.load_model(cfg, resolved, "fp32")
    model = models.apply_method(cfg, model)
    return models.count_trainable(model)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear", None])
def test_llama_counts_match_loaded_peft_model(tiny_llama, targets):
    cfg = _cfg(tiny_llama, lora={"r": 4, "target_modules": targets})
    counted = count_params(cfg)
    assert (counted.trainable, counted.total) == _real_count(cfg)


def test_lora_count_formula_on_gpt2_conv1d(tiny_gpt2):
    # c_attn: 64 -> 192, c_proj (attn 64->64, mlp 256->64) per layer, 2 layers; r*(d_in+d_out) each
    cfg = _cfg(tiny_gpt2, lora={"r": 8, "target_modules": ["c_attn", "c_proj"]})
    counted = count_params(cfg)
    per_layer = 8 * (64 + 192) + 8 * (64 + 64) + 8 * (256 + 64)
    assert counted.trainable == 2 * per_layer
    assert (counted.trainable, counted.total) == _real_count(cfg)


def test_seq_cls_lora_trains_the_head_and_head_only_trains_only_it(tiny_bert):
    cfg = _cfg(tiny_bert, model={"task": "seq-cls", "num_labels": 3}, data={"format": "classification"},
               lora={"r": 4, "target_modules": ["query", "value"]})
    lora = count_params(cfg)
    head = 64 * 3 + 3
    assert lora.trainable == 2 * 2 * 4 * (64 + 64) + head
    cfg.method.kind = "head-only"
    assert count_params(cfg).trainable == head
    cfg.method.kind = "full"
    full = count_params(cfg)
    # peft keeps the original head beside its trained copy, so LoRA's total is the model plus what trains
    assert full.trainable == full.total == lora.total - lora.trainable


def test_memory_estimate_orders_methods(tiny_llama):
    cfg = _cfg(tiny_llama, lora={"r": 8})
    report = estimate_memory(cfg)
    rows = {r.label.split(" (")[0]: r for r in report.rows}
    this, full, qlora = rows["this config"], rows["full fine-tuning"], rows["QLoRA 4-bit"]
    # full fine-tuning pays for gradients and Adam states of every weight
    assert full.grads > 50 * this.grads and full.optimizer == 2 * full.grads
    assert qlora.weights < full.weights
    assert this.total < full.total
    # padded batches on the CPU: batch x the longest example of the data (padded to a multiple of 8), not max_length
    assert report.tokens_per_step % (8 * cfg.train.batch_size) == 0
    assert report.tokens_per_step <= cfg.train.batch_size * cfg.data.max_length
    assert "full fine-tuning" in report.format_table()


def test_memory_grows_with_batch_and_shrinks_with_checkpointing(tiny_llama):
    cfg = _cfg(tiny_llama)
    base = estimate_memory(cfg, compare=False).rows[0].activations
    cfg.train.batch_size *= 2
    assert estimate_memory(cfg, compare=False).rows[0].activations == pytest.approx(2 * base, rel=0.01)
    cfg.train.gradient_checkpointing = True
    assert estimate_memory(cfg, compare=False).rows[0].activations < 2 * base


def test_8bit_optimizer_cuts_optimizer_state(tiny_llama):
    cfg = _cfg(tiny_llama, method={"kind": "full"})
    adam = estimate_memory(cfg, compare=False).rows[0].optimizer
    cfg.train.optimizer = "paged_adamw_8bit"
    assert estimate_memory(cfg, compare=False).rows[0].optimizer * 4 == adam


def test_rule_of_thumb_matches_the_tutorial():
    assert round(rule_of_thumb_gb(7_000_000_000)) == 168


# -- against measured peaks -----------------------------------------------------------------------------------------
def test_unreadable_data_falls_back_to_max_length_and_says_so(tiny_llama):
    cfg = _cfg(tiny_llama, data={"source": "someone/not-a-local-dataset", "format": "text"})
    report = estimate_memory(cfg, compare=False, cuda=False)
    assert report.tokens_per_step == cfg.train.batch_size * cfg.data.max_length
    assert "max_length" in report.tokens_note and "not a local file" in report.tokens_note


def test_cpu_estimate_is_for_fp32_host_memory(tiny_llama, h200):
    """Issue 9 defect 5: without a GPU the run trains in fp32 on the CPU; the estimate says so and counts fp32."""
    cfg = _cfg(tiny_llama)
    cpu = estimate_memory(cfg, compare=False, cuda=False)
    gpu = estimate_memory(cfg, compare=False, cuda=True)
    assert cpu.precision == "fp32" and cpu.rows[0].basis == "estimated for CPU, fp32, host memory"
    assert "estimated for CPU, fp32, host memory" in cpu.format_table()
    assert gpu.precision == "bf16" and "GPU memory" in gpu.rows[0].basis
    # fp32 activations are twice the bf16 ones
    assert cpu.rows[0].activations > 1.5 * gpu.rows[0].activations


def test_setup_panel_says_what_the_estimate_is_for(tiny_llama):
    """The Setup panel shows the estimate's basis under the table (issue 9 defect 5: a CPU box showed a bf16 GPU
    figure beside 'training runs on CPU')."""
    from rich.console import Console

    from loratui.ui.messages import EstimateResult
    from loratui.ui.widgets.setup_panel import EstimatePanel

    cfg = _cfg(tiny_llama)
    report = estimate_memory(cfg, cuda=False)
    panel = EstimatePanel()
    panel.result, panel.config, panel.status = EstimateResult(rows=report.rows, gpus=[]), cfg, ""
    console = Console(width=60, record=True)
    console.print(panel.build(60))
    text = console.export_text()
    assert "estimated for CPU, fp32, host memory" in text
    assert "no NVIDIA GPU found: training runs on CPU" in text


def test_cpu_demo_estimate_matches_its_measured_peak(smol_dir):
    """The embedded demo on a CPU (fp32): issue 9 saw a 3.56 GiB peak beside a 1.98 GiB bf16-on-CUDA estimate.
    Measured again 2026-11-26 on this workplace's 2-core CPU: max RSS 3.54 GiB (`/usr/bin/time -v loratui train`,
    sample_configs/smollm2-demo.yaml with max_steps 6, evaluations included; bench/RESULTS.md). That was the demo
    before issue 9's tuning (LoRA r=8 on the attention projections), kept here as measured."""
    import yaml

    from loratui.core.config import RunConfig

    data = yaml.safe_load((__import__("pathlib").Path(__file__).resolve().parent.parent / "sample_configs"
                           / "smollm2-demo.yaml").read_text())
    data["lora"].update({"r": 8, "alpha": 16, "preset": "llama-attn"})
    cfg = RunConfig.model_validate(data)
    row = estimate_memory(cfg, compare=False, cuda=False).rows[0]
    assert abs(row.total / 2**30 / 3.54 - 1) <= 0.10
    assert row.basis == "estimated for CPU, fp32, host memory"


def test_a_large_source_is_sampled_from_its_first_rows(bench_env, h200, monkeypatch):
    from loratui.train import step_tokens as estimate  # token counting lives in step_tokens

    monkeypatch.setattr(estimate, "LARGE_SOURCE", 1000)  # the bench's 3,000 rows count as large
    monkeypatch.setattr(estimate, "HEAD_ROWS", 500)
    monkeypatch.setattr(estimate, "_LENGTHS", {})
    report = estimate_memory(bench_cfg(bench_env, "1b", "lora", 16, 50, "default"), compare=False, cuda=True)
    assert "of the data's first 500 rows" in report.tokens_note
    assert 16 * 250 < report.tokens_per_step < 16 * 600


def test_cpu_minilm_classifier_estimate_matches_its_measured_peak(minilm_dir):
    """A MiniLM classifier on the CPU: sample_configs/minilm-sentiment.yaml with max_steps 20 (2 evaluations),
    max RSS 1.115 GiB measured 2026-11-26 on this workplace's 2-core CPU (`/usr/bin/time -v loratui train`)."""
    from loratui.core.config import load_config

    cfg = load_config(__import__("pathlib").Path(__file__).resolve().parent.parent / "sample_configs"
                      / "minilm-sentiment.yaml")
    cfg.train.max_steps = 20
    row = estimate_memory(cfg, compare=False, cuda=False).rows[0]
    assert abs(row.total / 2**30 / 1.115 - 1) <= 0.10


def test_minilm_classifier_estimate_within_10_percent_of_the_nvml_peak(minilm_dir, h200):
    """sample_configs/minilm-sentiment.yaml on an H200 (a random-init BERT of MiniLM's shape, bench/estimate_gpu.py):
    NVML 1.04 GiB, torch 0.25 GiB; the CUDA context is most of what the card shows for so small a model."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "sample_configs/minilm-sentiment.yaml").read_text())
    cfg["model"]["name"] = str(minilm_dir)
    report = estimate_memory(RunConfig.model_validate(cfg), compare=False, cuda=True)
    assert abs(report.rows[0].total / 2**30 / 1.04 - 1) <= 0.10, report.rows[0].total / 2**30


@pytest.mark.parametrize("fmt,source,packing", [("alpaca", "sample:contacts-json.jsonl", True),
                                                ("alpaca", "sample:contacts-json.jsonl", False),
                                                ("text", None, True)])
def test_the_evaluation_batches_are_the_engines_own(tmp_path, tiny_llama, bench_env, fmt, source, packing):
    """The held-out rows are the same at every evaluation and read in order: the estimate counts the evaluation's
    largest batch from those rows themselves (the bench's 1B run with 150 held out: 4,911 tokens, where drawing
    10 batches from the length distribution said 5,421), and it is the batch the engine will build."""
    from loratui.train import data, estimate, models

    work, _ = bench_env
    cfg = RunConfig.model_validate({
        "model": {"name": str(tiny_llama)},
        "data": {"source": source or str(work / "data.jsonl"), "format": fmt, "validation_fraction": 0.1,
                 "max_length": 256, "packing": "on" if packing else "off"},
        "train": {"max_steps": 10, "batch_size": 8, "seed": 7}})
    tokenizer = data.prepare_tokenizer(models.load_tokenizer(cfg))
    train_raw, val_raw = data.load_splits(cfg)
    _, val_ds, _ = data.tokenize_splits(cfg, tokenizer, train_raw, val_raw)
    engine_lengths = [len(r["input_ids"]) for r in val_ds]
    assert estimate.eval_lengths(cfg) == engine_lengths
    tokens = estimate.step_tokens(cfg, packing)
    assert tokens.eval == estimate.eval_batch_tokens(engine_lengths, 8, packing)
    if packing:
        assert tokens.eval == max(sum(engine_lengths[i:i + 8]) for i in range(0, len(engine_lengths), 8))
    # another seed holds out other rows: not served from the cache
    cfg.train.seed = 8
    assert estimate.eval_lengths(cfg) != engine_lengths


def test_a_validation_file_is_measured_row_by_row(tiny_llama):
    """The embedded demo holds out a file (80 contacts): the estimate's evaluation batches are that file's."""
    from loratui.train import data, estimate, models

    cfg = RunConfig.model_validate({
        "model": {"name": str(tiny_llama)},
        "data": {"source": "sample:contacts-json.jsonl", "validation_file": "sample:contacts-json-eval.jsonl",
                 "format": "alpaca", "max_length": 256, "packing": "on"},
        "train": {"max_steps": 10, "batch_size": 8, "eval_batch_size": 16}})
    tokenizer = data.prepare_tokenizer(models.load_tokenizer(cfg))
    train_raw, val_raw = data.load_splits(cfg)
    _, val_ds, _ = data.tokenize_splits(cfg, tokenizer, train_raw, val_raw)
    lengths = [len(r["input_ids"]) for r in val_ds]
    assert len(lengths) == 80 and estimate.eval_lengths(cfg) == lengths
    assert estimate.step_tokens(cfg, True).eval == max(sum(lengths[i:i + 16]) for i in range(0, 80, 16))


def test_cli_estimate_says_what_each_card_holds(bench_env, h200, monkeypatch):
    """`loratui estimate` on a box of four 80 GiB cards: full fine-tuning of the 8B shape does not fit one, so the
    engine would shard it (FSDP), and the line says each card's share, the number Setup shows."""
    from fixtures import h100_cards
    from loratui.commands import models as cli
    from loratui.core import gpu

    monkeypatch.setattr(gpu, "query_gpus", lambda *a, **k: h100_cards(4))
    cfg = bench_cfg(bench_env, "8b", "lora", 4, 20, "method=full")
    row = estimate_memory(cfg, compare=False, cuda=True).rows[0]
    line = cli._per_card_line(cfg, row)
    assert line.startswith("on 4 cards (FSDP, weights, grads and optimizer states sharded): ")
    assert line.endswith(f"{row.per_card('fsdp', 4) / 2**30:.1f} GiB a card")
    cfg.train.gpus = 1
    assert cli._per_card_line(cfg, row) is None  # one card: the table's total is the card's
    lora = bench_cfg(bench_env, "1b", "lora", 16, 50, "default")
    row = estimate_memory(lora, compare=False, cuda=True).rows[0]
    assert cli._per_card_line(lora, row).startswith("on 4 cards (DDP, a full replica): ")


def test_a_preference_run_counts_both_answers_of_every_pair(tmp_path, tiny_llama, h200):
    """dpo: each example is a chosen and a rejected answer after its prompt, padded to one length: the step holds
    twice the sequences an sft run of the same prompts and answers holds, and the estimate says so."""
    import json

    rows = [{"prompt": f"Extract the contact as JSON.\n\nContact: Person {i}, City {i}, p{i}@example.com",
             "chosen": json.dumps({"name": f"Person {i}", "city": f"City {i}", "email": f"p{i}@example.com"}),
             "rejected": "Sure! Here is the contact you asked for. " * (1 + i % 3)} for i in range(40)]
    pref = tmp_path / "pairs.jsonl"
    pref.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"instruction": r["prompt"], "input": "", "output": r["rejected"]}) + "\n"
                           for r in rows))
    base = {"model": {"name": str(tiny_llama)}, "train": {"batch_size": 4, "max_steps": 10}}
    dpo = RunConfig.model_validate({**base, "method": {"kind": "lora", "objective": "dpo"},
                                    "data": {"source": str(pref), "format": "preference", "max_length": 256,
                                             "validation_fraction": 0.0}})
    plain = RunConfig.model_validate({**base, "data": {"source": str(sft), "format": "alpaca", "max_length": 256,
                                                       "validation_fraction": 0.0, "packing": "off"}})
    from loratui.train.step_tokens import step_tokens

    got, ref = (estimate_memory(c, compare=False, cuda=True).rows[0] for c in (dpo, plain))
    assert "pairs: 4 x 2 answers" in got.tokens_note and "reference pass" in got.tokens_note
    pairs, once = step_tokens(dpo, packing=False), step_tokens(plain, packing=False)
    assert pairs.train >= 2 * once.train * 0.9  # both answers of each pair, padded to the longer
    assert got.activations > 1.5 * ref.activations


def test_cpu_dpo_estimate_matches_its_measured_peak(tmp_path, smol_dir):
    """DPO on the embedded model on a CPU (fp32), the pairs built from the demo's first 64 contacts (chosen: the exact
    JSON; rejected: the same contact pretty-printed after a preamble), LoRA r=16 on every projection, 8 pairs a step,
    max_length 128: max RSS 7.53 GiB (`/usr/bin/time -v loratui train`, 6 steps, 2026-12-04, this workplace's 2-core
    CPU). Without the reference pass in the estimate it said 6.51 GiB."""
    import json

    from loratui.train.data import resolve_source

    rows = [json.loads(line) for line in open(resolve_source("sample:contacts-json.jsonl"))][:64]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({
        "prompt": r["instruction"] + "\n\n" + r["input"], "chosen": r["output"],
        "rejected": "Sure! Here is the contact as JSON:\n" + json.dumps(json.loads(r["output"]), indent=2)}) + "\n"
        for r in rows))
    cfg = RunConfig.model_validate({
        "model": {"name": "smollm2-135m-instruct"}, "method": {"kind": "lora", "objective": "dpo"},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "preset": "llama-all"},
        "data": {"source": str(pairs), "format": "preference", "max_length": 128, "validation_fraction": 0.0},
        "train": {"max_steps": 6, "batch_size": 8, "lr": 5e-4, "eval_on_start": False}})
    row = estimate_memory(cfg, compare=False, cuda=False).rows[0]
    assert abs(row.total / 2**30 / 7.53 - 1) <= 0.10, f"{row.total / 2**30:.2f} GiB estimated"


def test_the_full_fine_tuning_row_of_a_continued_adapter_continues_none():
    """Issue 20: Setup's memory panel failed with a ValidationError once Start from was set: the full fine-tuning row
    copied method.start_from, which a full run refuses."""
    from loratui.train.estimate import comparison_config

    cfg = RunConfig.model_validate({"method": {"objective": "dpo", "start_from": "runs/sft"},
                                    "data": {"format": "preference"}})
    full, qlora = comparison_config(cfg, "full"), comparison_config(cfg, "qlora")
    assert (full.method.kind, full.method.start_from, full.train.optimizer) == ("full", None, "adamw_torch")
    assert qlora.method.start_from == "runs/sft" and cfg.method.start_from == "runs/sft"


def test_a_missing_local_data_file_is_named_as_missing_and_a_hub_id_as_not_local(tmp_path):
    """QA walk: a data path that does not exist on this machine was called 'not a local file' (as a hub dataset is),
    while `loratui train` said 'no such file'. The estimate still assumes full rows for both."""
    from loratui.train.step_tokens import step_tokens

    cfg = RunConfig.model_validate({"model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct"},
                                    "data": {"source": str(tmp_path / "nodata.jsonl"), "max_length": 128},
                                    "train": {"max_steps": 10, "batch_size": 8}})
    missing = step_tokens(cfg, packing=False)
    assert "nodata.jsonl): no such file here: assumed 8 x max_length 128" in missing.note
    assert missing.train == 8 * 128 and not missing.measured
    cfg.data.source = "someone/some-dataset"
    assert "(someone/some-dataset) is not a local file" in step_tokens(cfg, packing=False).note


def test_a_data_error_in_the_estimate_is_said_whole_with_its_fix(tmp_path, tiny_llama):
    """Setup's estimate panel and `loratui estimate` cut the data's error at 120 characters: '(columns:
    instruction, input, ou)' with the fix gone, where `loratui train` said it whole."""
    import json

    from loratui.train.step_tokens import sample_lengths

    data = tmp_path / "contacts-json-extraction-train.jsonl"
    data.write_text("".join(json.dumps({"instruction": "Say hi.", "input": f"row {i}", "output": "hi"}) + "\n"
                            for i in range(4)))
    cfg = RunConfig.model_validate({"model": {"name": str(tiny_llama)},
                                    "data": {"source": str(data), "output_column": "ou12"}})
    why = sample_lengths(cfg)
    assert isinstance(why, str) and "(columns: instruction, input, output)" in why
    assert why.endswith("(set data.output_column to one of the columns))")  # the fix, whole
