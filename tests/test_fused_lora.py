"""Fused LoRA projections (train.fused_lora) and the in-place forward every 16-bit LoRA run takes
(loratui.train.inplace_lora): the same loss and gradients as peft's path, fewer kernels and autograd nodes."""

from __future__ import annotations

import copy

import pytest
import torch

from loratui.train.fused_lora import fuse_lora
from loratui.train.inplace_lora import inplace_lora

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_peft(dropout: float = 0.1):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=100))
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=ALL))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero: give the adapter an output, so its path is exercised
            torch.nn.init.normal_(p, std=0.1)
    return model


def loss_and_grads(model, ids, autocast: bool = False):
    model.train()
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout masks for both paths
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def error(grads, ref) -> float:
    """The gradients' relative distance from the fp32 reference's."""
    num = sum((grads[k].float() - ref[k]).norm() ** 2 for k in ref) ** 0.5
    return float(num / sum(v.norm() ** 2 for v in ref.values()) ** 0.5)


@pytest.mark.parametrize("install,dropout", [(fuse_lora, 0.1), (inplace_lora, 0.1), (inplace_lora, 0.0)])
def test_fused_projections_train_exactly_as_peft_does_in_fp32(install, dropout):
    peft_model = tiny_peft(dropout=dropout)
    fused = copy.deepcopy(peft_model)
    assert install(fused) == 14  # 7 projections x 2 layers
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    loss_a, grads_a = loss_and_grads(peft_model, ids)
    loss_b, grads_b = loss_and_grads(fused, ids)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for name, g in grads_a.items():  # the dropout mask redrawn in backward is the forward's
        assert torch.allclose(grads_b[name], g, rtol=1e-4, atol=1e-6), name


def test_under_bf16_autocast_the_fused_path_is_as_close_to_fp32_as_peft():
    peft_model = tiny_peft(dropout=0.0)
    fused = copy.deepcopy(peft_model)
    fuse_lora(fused)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    _, ref = loss_and_grads(peft_model, ids)

    peft_err = error(loss_and_grads(peft_model, ids, autocast=True)[1], ref)
    fused_err = error(loss_and_grads(fused, ids, autocast=True)[1], ref)
    assert fused_err < 2 * peft_err + 1e-3, (fused_err, peft_err)


@pytest.mark.parametrize("install", [fuse_lora, inplace_lora])
def test_disabled_adapters_and_inference_take_peft_s_own_path(install):
    model = tiny_peft()
    install(model)
    ids = torch.randint(0, 100, (1, 8))
    model.eval()
    with torch.no_grad():
        with_adapter = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert not torch.allclose(with_adapter, base)  # the adapter counts, and switching it off still works
    model.train()
    with model.disable_adapter():  # the reference pass of preference methods: adapters off, gradients on
        out = model(input_ids=ids).logits
    assert torch.allclose(out, base, atol=1e-5)


def test_lean_activations_leave_a_fused_projection_s_dropout_alone():
    from loratui.train.lean import lean_lora

    model = tiny_peft(dropout=0.1)
    fuse_lora(model)
    assert lean_lora(model) == 0  # nothing to fold: the fused function redraws the mask
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer.lora_dropout["default"], torch.nn.Dropout) and layer.lora_dropout["default"].p == 0.1


def test_dora_is_left_to_peft():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, vocab_size=50))
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True))
    assert fuse_lora(model) == 0 and inplace_lora(model) == 0


def test_in_place_under_bf16_autocast_a_16bit_base_is_as_close_to_fp32_as_peft():
    """The base in bf16 and the adapters in fp32, as a bf16 LoRA run holds them: the adapter's product is added in
    the output's dtype, no worse than peft's path against the fp32 reference."""
    ref32 = tiny_peft(dropout=0.0)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    _, ref = loss_and_grads(ref32, ids)
    peft16 = copy.deepcopy(ref32)
    for p in peft16.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    fast16 = copy.deepcopy(peft16)
    assert inplace_lora(fast16) == 14

    peft_err = error(loss_and_grads(peft16, ids, autocast=True)[1], ref)
    fast_err = error(loss_and_grads(fast16, ids, autocast=True)[1], ref)
    assert fast_err < 1.5 * peft_err + 1e-3, (fast_err, peft_err)


def test_an_in_place_adapter_reloads_as_a_plain_peft_adapter(tmp_path):
    from peft import PeftModel

    model = tiny_peft()
    assert inplace_lora(model) == 14
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    loss_and_grads(model, ids)
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_peft().unload(), tmp_path / "adapter")
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)


def test_a_4bit_base_gives_peft_s_outputs_and_gradients():
    bnb = pytest.importorskip("bitsandbytes")  # GPU boxes (the gpu extra); its 4-bit kernels also run on a CPU
    from peft import LoraConfig, get_peft_model

    class Proj(torch.nn.Module):
        def __init__(self):
            super().__init__()
            q = bnb.nn.Linear4bit(64, 96, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
            q.weight = bnb.nn.Params4bit(torch.randn(96, 64), requires_grad=False, quant_type="nf4")
            self.q_proj = q.to("cpu")

        def forward(self, x):
            return self.q_proj(x)

    torch.manual_seed(0)
    a = get_peft_model(Proj(), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj"]))
    for name, p in a.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    b = copy.deepcopy(a)
    assert fuse_lora(b) == 1
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16)
    got = []
    for m in (a, b):
        xx = x.clone().requires_grad_(True)
        m.train()
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(xx)
        (y.float() ** 2).sum().backward()
        got.append([y.detach().float(), xx.grad.float()] + [p.grad.float() for p in m.parameters() if p.requires_grad])
    for want, have in zip(*got):
        assert float((have - want).norm() / want.norm()) < 0.01  # bf16 rounding only


def test_the_in_place_forward_launches_fewer_ops_than_peft_s_and_copies_no_gradient():
    """Each projection's forward and backward, counted as dispatched ops (a kernel each on a GPU): the in-place
    path saves peft's separate matmul, multiply and add, and adds into a tensor of its own (adding into a view of
    it made autograd clone and copy every projection's gradient: 2 ops more than peft's path, not fewer)."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view and func.overloadpacket is not torch.ops.aten._unsafe_view:
                self.ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    peft16 = tiny_peft(dropout=0.0)
    for p in peft16.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    fast16 = copy.deepcopy(peft16)
    inplace_lora(fast16)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    counts = []
    for model in (peft16, fast16):
        loss_and_grads(model, ids, autocast=True)  # warm: lazy first-call work is not counted
        with Count() as c:
            loss_and_grads(model, ids, autocast=True)
        counts.append(c.ops)
    peft_ops, fast_ops = (sum(c.values()) for c in counts)
    assert fast_ops <= peft_ops - 2 * 14, (peft_ops, fast_ops)  # 14 projections
    assert counts[1]["aten.copy_"] <= counts[0]["aten.copy_"] and counts[1]["aten.clone"] <= counts[0]["aten.clone"]
