"""Exact parameter counts (as peft reports them) and the memory estimate's behaviour."""

import pytest

from loratui.core.config import RunConfig
from loratui.train.estimate import count_params, estimate_memory, rule_of_thumb_gb


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
    assert report.tokens_per_step == cfg.train.batch_size * cfg.data.max_length
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
