"""The in-place LoRA forward (loratui.train.inplace_lora): peft's loss and gradients, with fewer kernels."""

from __future__ import annotations

import copy

import pytest
import torch

from loratui.train.inplace_lora import inplace_lora

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_base():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100))


def tiny_peft(dropout: float = 0.1, **lora):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_base(), LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=ALL,
                                                   **lora))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapter an output, so its path is exercised
            torch.nn.init.normal_(p, std=0.1)
    return model


def loss_and_grads(model, ids, dtype=None):
    model.train()
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout masks for both paths
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_in_place_projections_train_exactly_as_peft_does_in_fp32(dropout):
    ref = tiny_peft(dropout=dropout)
    fast = copy.deepcopy(ref)
    assert inplace_lora(fast) == 14  # 7 projections x 2 layers
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    loss_a, grads_a = loss_and_grads(ref, ids)
    loss_b, grads_b = loss_and_grads(fast, ids)
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    for name, g in grads_a.items():
        assert torch.allclose(grads_b[name], g, rtol=1e-4, atol=1e-6), name


def test_under_bf16_autocast_a_16bit_base_is_as_close_to_fp32_as_peft():
    """The base in bf16 and the adapters in fp32, as a bf16 LoRA run holds them: the adapter's product is added in
    the output's dtype, no worse than peft's path against the fp32 reference."""
    ref32 = tiny_peft(dropout=0.0)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    _, ref = loss_and_grads(ref32, ids)
    peft16 = copy.deepcopy(ref32)
    for name, p in peft16.named_parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    fast16 = copy.deepcopy(peft16)
    assert inplace_lora(fast16) == 14

    def error(grads):
        num = sum((grads[k] - ref[k]).norm() ** 2 for k in ref) ** 0.5
        return float(num / sum(v.norm() ** 2 for v in ref.values()) ** 0.5)

    peft_err = error(loss_and_grads(peft16, ids, torch.bfloat16)[1])
    fast_err = error(loss_and_grads(fast16, ids, torch.bfloat16)[1])
    assert fast_err < 1.5 * peft_err + 1e-3, (fast_err, peft_err)


def test_disabled_adapters_inference_and_variants_take_peft_s_own_path():
    model = tiny_peft()
    inplace_lora(model)
    ids = torch.randint(0, 100, (1, 8))
    model.eval()
    with torch.no_grad():
        with_adapter = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert not torch.allclose(with_adapter, base)  # the adapter counts, and switching it off still works
    dora = tiny_peft(use_dora=True)
    assert inplace_lora(dora) == 0  # DoRA uses the dropped input itself: peft's forward


def test_a_saved_adapter_reloads_as_a_plain_peft_adapter(tmp_path):
    from peft import PeftModel

    model = tiny_peft()
    inplace_lora(model)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    loss_and_grads(model, ids)
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_base(), tmp_path / "adapter")
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)
