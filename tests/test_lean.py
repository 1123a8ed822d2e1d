"""train.lean_activations: LoRA keeps less for its backward pass and trains exactly the same (checked on CPU; the
memory it saves on a GPU is in bench/RESULTS.md)."""

from __future__ import annotations

import copy

import pytest
import torch

from loratui.train.lean import RecomputedDropoutLinear, keep_adapter_input_dtype, lean_lora


def _base(layers: int = 2):
    """A random-init Llama small enough for a CPU step (seeded: the same weights each call)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=128))


def _model(dtype=torch.float32, dropout=0.1):
    from peft import LoraConfig, get_peft_model

    base = _base().to(dtype)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(base, lora)
    for name, p in model.named_parameters():  # B starts at zero in peft: give it values so A's gradient is not 0
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    model.train()
    return model


def _step(model, ids, autocast_dtype=None):
    """One forward/backward on a fixed RNG stream; returns the LoRA gradients and the bytes the autograd graph
    kept for the backward pass (distinct storages, as the allocator holds them)."""
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.zero_grad(set_to_none=True)
    torch.manual_seed(1234)
    ctx = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else torch.autocast("cpu", enabled=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, sum(kept.values()), loss.item()


def test_lean_lora_trains_the_same_and_keeps_less():
    ids = torch.randint(0, 256, (4, 96), generator=torch.Generator().manual_seed(0))
    plain = _model()
    lean = copy.deepcopy(plain)
    assert lean_lora(lean) == 14  # 7 projections x 2 layers
    g_plain, kept_plain, loss_plain = _step(plain, ids)
    g_lean, kept_lean, loss_lean = _step(lean, ids)
    assert loss_lean == pytest.approx(loss_plain, rel=1e-6)
    assert g_plain.keys() == g_lean.keys()
    for name in g_plain:  # the same dropout masks, regenerated in the backward pass: the same gradients
        torch.testing.assert_close(g_lean[name], g_plain[name], rtol=1e-5, atol=1e-7, msg=name)
    # the dropped copies and masks of 14 adapted inputs are gone
    assert kept_lean < 0.8 * kept_plain, (kept_lean, kept_plain)


def test_lean_lora_under_autocast_keeps_the_16bit_input():
    """A 16-bit base trained under autocast: peft casts each adapter's input to fp32 (a copy per adapter); lean
    hands the input as it is (autocast casts for the matmul) and keeps only it."""
    ids = torch.randint(0, 256, (4, 96), generator=torch.Generator().manual_seed(0))
    plain = _model(dtype=torch.bfloat16)
    for name, p in plain.named_parameters():  # adapters in fp32, as peft keeps them for training
        if p.requires_grad:
            p.data = p.data.float()
    lean = copy.deepcopy(plain)
    keep_adapter_input_dtype(lean)
    lean_lora(lean)
    g_plain, kept_plain, loss_plain = _step(plain, ids, torch.bfloat16)
    g_lean, kept_lean, loss_lean = _step(lean, ids, torch.bfloat16)
    assert loss_lean == pytest.approx(loss_plain, rel=2e-2)
    for name in g_plain:  # bf16 rounding differs only where autocast's cast replaces peft's
        cos = torch.nn.functional.cosine_similarity(g_lean[name].flatten(), g_plain[name].flatten(), dim=0)
        assert cos > 0.99, (name, cos)
    assert kept_lean < 0.7 * kept_plain, (kept_lean, kept_plain)


def test_lean_adapter_saves_and_reloads_as_a_plain_peft_adapter(tmp_path):
    from peft import PeftModel

    model = _model()
    lean_lora(model)
    _step(model, torch.randint(0, 256, (2, 32)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.01)
    model.save_pretrained(str(tmp_path / "adapter"))
    model.eval()
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(_base(), str(tmp_path / "adapter")).eval()
    assert not any(isinstance(m, RecomputedDropoutLinear) for m in reloaded.modules())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, want)


def test_no_dropout_or_dora_is_left_as_peft_builds_it():
    assert lean_lora(_model(dropout=0.0)) == 0
    from peft import LoraConfig, get_peft_model

    dora = get_peft_model(_base(layers=1), LoraConfig(r=4, lora_dropout=0.1, use_dora=True, target_modules=["q_proj"]))
    assert lean_lora(dora) == 0


def test_the_engine_trains_the_same_with_lean_on_and_off(tmp_path, tiny_llama):
    """Through the engine (CPU): the switch changes what the backward pass keeps, not the run: same losses, and
    the started event says which it was."""
    from loratui.core import runs
    from loratui.core.config import RunConfig
    import json
    from loratui.train.engine import Engine

    losses = {}
    for lean in ("on", "off"):
        cfg = RunConfig.model_validate({
            "model": {"name": str(tiny_llama)}, "lora": {"r": 4, "alpha": 8, "dropout": 0.2, "preset": "llama-all"},
            "data": {"source": "sample:contacts-json.jsonl", "max_samples": 24, "validation_fraction": 0.0,
                     "max_length": 64},
            "train": {"max_steps": 4, "batch_size": 4, "lr": 0.01, "logging_steps": 1, "lean_activations": lean},
            "output": {"runs_dir": str(tmp_path), "name": f"lean-{lean}"}})
        run = runs.create_run(cfg)
        engine = Engine(run, echo=lambda line: None)
        assert engine.run() == 0
        folded = sum(isinstance(m, RecomputedDropoutLinear) for m in engine.model.modules())
        assert folded == (14 if lean == "on" else 0)
        # and each layer's MLP hands its down projection the activation's inputs (train.lean_mlp: auto)
        parts = [m.parts for m in engine.model.modules() if isinstance(m, RecomputedDropoutLinear) and m.parts]
        assert len(parts) == (2 if lean == "on" else 0)
        assert all(p.combine is not None and not p.disabled for p in parts)  # checked bit for bit, then used
        events = [json.loads(line) for line in run.events_path.read_text().splitlines()]
        started = [e for e in events if e["kind"] == "started"][0]["speed"]
        assert (started["lean"], started["lean_mlp"]) == ((True, True) if lean == "on" else (False, False))
        losses[lean] = [e["loss"] for e in events if e["kind"] == "step"]
    assert len(losses["on"]) == 4
    assert losses["on"] == pytest.approx(losses["off"], rel=1e-5)
    from peft.tuners.lora import LoraLayer

    assert all(m.cast_input_dtype_enabled for m in engine.model.modules() if isinstance(m, LoraLayer))  # fp32: as is


def test_bf16_run_hands_adapters_their_input_in_bf16(tiny_llama, tmp_path):
    """Under autocast (bf16 here, lean activations off) peft's cast of each adapter's input to fp32 is switched
    off (autocast casts it back for the matmul; 8B bf16 LoRA: a sixth of the step's kernel time was such copies),
    and the run trains: the loss falls as in fp32."""
    from peft.tuners.lora import LoraLayer

    from loratui.core import runs
    from loratui.core.config import RunConfig
    from loratui.train.engine import Engine

    cfg = RunConfig.model_validate({
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4, "alpha": 8, "dropout": 0.2, "preset": "llama-all"},
        "data": {"source": "sample:contacts-json.jsonl", "max_samples": 24, "validation_fraction": 0.0,
                 "max_length": 64},
        "train": {"max_steps": 4, "batch_size": 4, "lr": 0.01, "logging_steps": 1, "precision": "bf16",
                  "lean_activations": "off"},
        "output": {"runs_dir": str(tmp_path), "name": "bf16"}})
    run = runs.create_run(cfg)
    engine = Engine(run, echo=lambda line: None)
    assert engine.run() == 0
    layers = [m for m in engine.model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 14 and not any(m.cast_input_dtype_enabled for m in layers)
    losses = [e.loss for e in run.events() if e.kind == "step"]
    assert len(losses) == 4 and losses[-1] < losses[0]


def test_gated_mlp_down_adapter_keeps_the_activation_inputs_not_its_own():
    """A gated MLP's down projection: its adapter's input (act(gate) * up, intermediate-size wide) is computed again
    in the backward pass from what the activation keeps anyway, so it is not kept twice; gradients unchanged."""
    from loratui.train.lean import lean_gated_mlps

    ids = torch.randint(0, 256, (4, 96), generator=torch.Generator().manual_seed(0))
    plain = _model()
    lean_lora(plain)
    parts = copy.deepcopy(plain)
    assert lean_gated_mlps(parts) == 2  # one MLP a layer
    g_plain, kept_plain, loss_plain = _step(plain, ids)
    g_parts, kept_parts, loss_parts = _step(parts, ids)
    assert loss_parts == pytest.approx(loss_plain, rel=1e-6)
    for name in g_plain:
        torch.testing.assert_close(g_parts[name], g_plain[name], rtol=1e-5, atol=1e-7, msg=name)
    # each layer's down-projection input (4 x 96 tokens x 160 wide, fp32) is no longer kept
    saved = 2 * 4 * 96 * 160 * 4
    assert kept_plain - kept_parts >= saved, (kept_plain, kept_parts, saved)
    # nothing is held between steps: the parts are taken by the adapter's call
    assert all(m.parts.g is None and m.parts.u is None for m in parts.modules()
               if isinstance(m, RecomputedDropoutLinear) and m.parts is not None)


def test_gated_parts_that_do_not_rebuild_the_input_are_not_used():
    """If the down projection's input is not exactly act(gate) * up (a model whose MLP does something else), the
    check on the first step finds it and that MLP keeps its input as before: same gradients as plain lean."""
    from loratui.train.lean import lean_gated_mlps

    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))
    plain = _model()
    lean_lora(plain)
    odd = copy.deepcopy(plain)
    for layer in odd.base_model.model.model.layers:  # the MLP scales its activation: no longer act(g) * u
        mlp = layer.mlp
        mlp.forward = (lambda m: lambda x: m.down_proj(m.act_fn(m.gate_proj(x)) * m.up_proj(x) * 0.5))(mlp)
    for layer in plain.base_model.model.model.layers:
        mlp = layer.mlp
        mlp.forward = (lambda m: lambda x: m.down_proj(m.act_fn(m.gate_proj(x)) * m.up_proj(x) * 0.5))(mlp)
    assert lean_gated_mlps(odd) == 2
    g_plain, _, _ = _step(plain, ids)
    g_odd, _, _ = _step(odd, ids)
    for name in g_plain:
        torch.testing.assert_close(g_odd[name], g_plain[name], rtol=1e-5, atol=1e-7, msg=name)
    assert all(m.parts.disabled for m in odd.modules() if isinstance(m, RecomputedDropoutLinear) and m.parts)
