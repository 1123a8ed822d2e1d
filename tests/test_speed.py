"""The fast path's choices and its varlen attention wiring, checked on CPU (the kernels themselves run on the GPU:
bench/speed.py and bench/RESULTS.md)."""

from __future__ import annotations

import pytest
import torch

from loratui.core.config import RunConfig
from loratui.core.errors import ConfigError
from loratui.train import speed


def cfg(**train) -> RunConfig:
    data = train.pop("data", {})
    return RunConfig.model_validate({"model": {"name": "smollm2-135m-instruct"}, "train": train, "data": data})


def test_auto_turns_the_fast_path_on_for_a_gpu_only(monkeypatch):
    monkeypatch.setattr(speed, "varlen_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_supports", lambda model_type: model_type == "llama")
    gpu = speed.resolve(cfg(), cuda=True, model_type="llama")
    assert gpu == speed.Speed(packing=True, attention=speed.VARLEN, liger=True, optimizer="adamw_torch_fused",
                              compile=False, lean=False)
    # lean activations: on for a quantized base (chosen to save memory), and when asked
    assert speed.resolve(cfg(data={}, **{}), cuda=True, model_type="llama").lean is False
    qlora = RunConfig.model_validate({"model": {"name": "smollm2-135m-instruct"}, "method": {"kind": "qlora"}})
    assert speed.resolve(qlora, cuda=True, model_type="llama").lean is True
    assert speed.resolve(qlora, cuda=True, model_type="llama").lean_mlp is True  # follows lean, has its own switch
    qlora.train.fused_lora = "on"
    assert speed.resolve(qlora, cuda=True, model_type="llama").lean_mlp is False  # a fused projection keeps x
    qlora.train.fused_lora = "auto"
    qlora.train.lean_mlp = "off"
    assert speed.resolve(qlora, cuda=True, model_type="llama").lean_mlp is False
    qlora.train.lean_mlp, qlora.train.gradient_checkpointing = "auto", True  # layers recomputed whole: nothing to do
    assert speed.resolve(qlora, cuda=True, model_type="llama").lean_mlp is False
    assert speed.resolve(qlora, cuda=False, model_type="llama").lean is False
    assert speed.resolve(cfg(lean_activations="on"), cuda=True, model_type="llama").lean is True
    cpu = speed.resolve(cfg(), cuda=False, model_type="llama")
    assert cpu == speed.Speed(packing=False, attention="sdpa", liger=False, optimizer="adamw_torch", compile=False)
    # every lever has an off switch
    off = speed.resolve(cfg(liger="off", attention="sdpa", optimizer="adamw_torch", lean_activations="off",
                            fused_lora="off", data={"packing": False}), cuda=True, model_type="llama")
    assert off == speed.Speed(packing=False, attention="sdpa", liger=False, optimizer="adamw_torch", compile=False)
    # a model liger does not cover keeps the rest of the fast path
    assert speed.resolve(cfg(), cuda=True, model_type="gpt2").liger is False


def test_choices_that_cannot_work_here_are_one_line_errors():
    with pytest.raises(ConfigError) as err:
        speed.resolve(cfg(attention="varlen", data={"packing": "on"}), cuda=False)
    assert err.value.field == "train.attention"
    with pytest.raises(ConfigError) as err:
        speed.resolve(cfg(attention="varlen"), cuda=False)
    assert err.value.field == "train.attention" and "packed" in str(err.value)
    with pytest.raises(ConfigError) as err:
        speed.resolve(cfg(liger="on"), cuda=False)
    assert err.value.field == "train.liger"
    with pytest.raises(ConfigError) as err:
        speed.resolve(cfg(fused_lora="on", compile=True), cuda=False)
    assert err.value.field == "train.fused_lora"
    with pytest.raises(ConfigError) as err:
        speed.resolve(cfg(lean_mlp="on"), cuda=False)
    assert err.value.field == "train.lean_mlp" and "lean_activations" in err.value.hint


def test_packing_accepts_the_old_true_false():
    assert cfg(data={"packing": True}).data.packing == "on"
    assert cfg(data={"packing": False}).data.packing == "off"
    assert cfg().data.packing == "auto"


def _reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False,
                      **_):
    """What torch's CUDA kernel computes, for CPU: causal attention inside each packed example."""
    out = torch.empty_like(q)
    bounds = cu_q.tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        qs, ks, vs = (x[a:b].transpose(0, 1) for x in (q, k, v))
        if enable_gqa:
            ks, vs = (x.repeat_interleave(qs.shape[0] // x.shape[0], dim=0) for x in (ks, vs))
        out[a:b] = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True,
                                                                    scale=scale).transpose(0, 1)
    return out


def test_packed_rows_through_varlen_attention_match_each_example_alone(monkeypatch):
    """The wiring: collator boundaries -> model kwargs -> our attention -> per-example causal attention."""
    import torch.nn.attention.varlen as varlen
    from transformers import LlamaConfig, LlamaForCausalLM

    from loratui.train.data import PackingCollator

    monkeypatch.setattr(varlen, "varlen_attn", _reference_varlen)
    speed.register_varlen_attention()
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100)
    model = LlamaForCausalLM(config).eval()
    examples = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
    batch = PackingCollator(separator_id=-100, return_flash_attn_kwargs=True)(
        [{"input_ids": e, "labels": e} for e in examples])
    assert "cu_seq_lens_q" in batch and batch["input_ids"].shape[0] == 1
    model.set_attn_implementation(speed.VARLEN)
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        model.set_attn_implementation("sdpa")
        alone = torch.cat([model(input_ids=torch.tensor([e])).logits[0] for e in examples])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)


def test_the_engine_builds_its_trainer_arguments_from_the_fast_path(tmp_path):
    """Guards the defaults: the TrainingArguments the engine builds carry the levers speed.resolve chose."""
    from loratui.core.runs import RunDir
    from loratui.train.engine import Engine

    engine = Engine(RunDir(tmp_path))
    engine.cfg = cfg()
    engine._cuda = False
    engine.speed = speed.Speed(packing=True, attention=speed.VARLEN, liger=False, optimizer="adamw_torch_fused",
                               compile=False)
    args = engine._training_args("fp32", has_eval=False)
    assert args.optim == "adamw_torch_fused"
    assert args.include_num_input_tokens_seen in ("no", False)  # no host sync a step: the trainer counts tokens
    assert args.ddp_find_unused_parameters is False and not args.torch_compile and not args.use_liger_kernel
    engine.speed = speed.Speed(packing=True, attention=speed.VARLEN, liger=True, optimizer="adamw_torch_fused",
                               compile=False)
    try:
        args = engine._training_args("fp32", has_eval=False)
    except ImportError:  # transformers checks liger-kernel is installed (GPU boxes only)
        return
    assert args.use_liger_kernel and args.liger_kernel_config["fused_linear_cross_entropy"] is True


def test_the_engine_side_asks_for_expandable_allocator_segments_unless_the_user_chose():
    """Packed batches change length every step; without expandable segments the card kept 4.7 GiB more than the
    run used (1B LoRA, bench/RESULTS.md round 6). The user's own PYTORCH_CUDA_ALLOC_CONF is left alone."""
    import os
    import subprocess
    import sys

    code = "import loratui.train, os; print(os.environ.get('PYTORCH_CUDA_ALLOC_CONF'))"
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "expandable_segments:True"
    env["PYTORCH_CUDA_ALLOC_CONF"] = "max_split_size_mb:512"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "max_split_size_mb:512"


def test_wide_loss_chunks_need_ligers_fused_loss_and_are_priced(monkeypatch, tiny_llama):
    from loratui.train import estimate as est

    on = cfg(wide_loss_chunks="on")
    with pytest.raises(ConfigError) as err:  # a CPU: no Liger
        speed.resolve(on, cuda=False, model_type="llama")
    assert err.value.field == "train.wide_loss_chunks" and "auto" in err.value.hint
    monkeypatch.setattr(speed, "varlen_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_supports", lambda model_type: True)
    assert speed.resolve(on, cuda=True, model_type="llama").wide_loss_chunks
    assert not speed.resolve(cfg(), cuda=True, model_type="llama").wide_loss_chunks  # auto: the fit's to turn on
    dpo = on.model_copy(deep=True)
    dpo.method.objective = "dpo"
    with pytest.raises(ConfigError):  # TRL's preference trainers compute their own log-probabilities
        speed.resolve(dpo, cuda=True, model_type="llama")
    # the estimate prices the wider logits chunk: (2 + 4) bytes x 8 hidden states a token instead of 1
    narrow = RunConfig.model_validate({"model": {"name": str(tiny_llama)}, "data": {"validation_fraction": 0}})
    wide = narrow.model_copy(deep=True)
    wide.train.wide_loss_chunks = "on"
    a, b = (est.estimate_memory(c, compare=False, cuda=True).rows[0] for c in (narrow, wide))
    tokens = est.step_tokens(narrow, True).train
    assert b.activations - a.activations == 6 * 7 * 64 * tokens


def test_widen_loss_chunks_binds_ligers_chunk_multiplier_once(monkeypatch):
    import inspect
    import sys
    import types

    seen = []

    def flce(x, weight, target, reduction="mean", chunk_mem_const: int = 1):
        seen.append(chunk_mem_const)

    names = ["liger_kernel", "liger_kernel.transformers", "liger_kernel.transformers.functional"]
    mods = [types.ModuleType(n) for n in names]
    mods[1].functional, mods[0].transformers = mods[2], mods[1]
    mods[2].liger_fused_linear_cross_entropy = flce
    for n, m in zip(names, mods):
        monkeypatch.setitem(sys.modules, n, m)
    speed.widen_loss_chunks()
    speed.widen_loss_chunks()  # a second model in the same process (the Playground, a resumed run): still 8
    fn = mods[2].liger_fused_linear_cross_entropy
    fn(1, 2, 3)
    assert seen == [speed.WIDE_LOSS_CHUNK] and fn.func is flce
    # LigerForCausalLMLoss passes only the parameters the function's signature names
    assert "chunk_mem_const" in inspect.signature(fn).parameters


def _varlen_mapping(kv_head_of):
    """A varlen kernel that takes fewer key/value heads as they are, query head i reading key/value head
    ``kv_head_of(i, groups)``; torch 2.11's FlashAttention maps i // groups."""
    def attn(q, k, v, cu_q, cu_k, max_q, max_k, scale=None, **_):
        groups = q.shape[1] // k.shape[1]
        idx = torch.tensor([kv_head_of(i, groups, k.shape[1]) for i in range(q.shape[1])])
        return _reference_varlen(q, k[:, idx], v[:, idx], cu_q, cu_k, max_q, max_k, scale=scale)
    return attn


def test_grouped_heads_go_to_the_kernel_as_they_are_only_where_it_maps_them_as_repeating_would():
    """No 4x copies of keys and values where the kernel does the grouping itself; copies kept where it maps the
    heads another way or refuses unequal heads (as SDPA without enable_gqa does)."""
    kw = {"is_causal": True}
    assert speed.varlen_takes_gqa(_varlen_mapping(lambda i, groups, kv: i // groups), kw, "cpu")
    assert not speed.varlen_takes_gqa(_varlen_mapping(lambda i, groups, kv: i % kv), kw, "cpu")
    assert not speed.varlen_takes_gqa(_reference_varlen, kw, "cpu")  # unequal heads: an error
