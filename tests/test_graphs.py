"""CUDA graphs of decoder layers (train.cuda_graphs): the padding, the dispatch and the rules, on a CPU.

The capture itself needs a GPU (bench/graph_probe.py and bench/speed.py measure it there); here a stand-in capture
that returns the layer calls unchanged checks everything around it: a padded packed batch trains exactly as the
unpadded one, the layers reached through the dispatcher get the same arguments as their own forward, evaluation
stays eager, and a config that cannot use graphs is one line naming the field.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AttentionInterface

from loratui.core.config import RunConfig
from loratui.core.errors import ConfigError
from loratui.train import speed
from loratui.train.data.collate import PackingCollator
from loratui.train.graphs import PAD_KEY, LayerGraphs, bucket_for, pad_packed

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEGMENTS = "test_segments"


def _segment_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """What the varlen kernel computes, on a CPU: causal attention inside each [cu[i], cu[i+1]) span."""
    cu = kwargs["cu_seq_lens_q"].tolist()
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = torch.zeros_like(query)
    for a, b in zip(cu, cu[1:]):
        if b > a:
            out[:, :, a:b] = torch.nn.functional.scaled_dot_product_attention(
                query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], is_causal=True, scale=scaling)
    return out.transpose(1, 2), None


AttentionInterface.register(SEGMENTS, _segment_attention)


def tiny_peft(dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=100, use_cache=False)
    cfg._attn_implementation = SEGMENTS
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout,
                                                                          target_modules=ALL))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    return model


def packed(lengths, graph_rows=None):
    torch.manual_seed(3)
    rows = [{"input_ids": torch.randint(3, 100, (n,)).tolist()} for n in lengths]
    for r in rows:
        r["labels"] = list(r["input_ids"])
    return PackingCollator(return_flash_attn_kwargs=True, graph_rows=graph_rows)(rows)


def loss_and_grads(model, batch):
    model.train()
    model.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != PAD_KEY}
    loss = model(**inputs).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_buckets_are_few_and_pad_at_most_a_third():
    assert [bucket_for(n) for n in (1, 256, 257, 1024, 1025, 1537, 2049, 4097)] == [
        256, 256, 512, 1024, 1536, 2048, 3072, 6144]
    assert all(n <= bucket_for(n) <= max(256, n * 3 // 2 + 256) for n in range(1, 20000, 37))


def test_a_padded_step_trains_exactly_as_the_packed_one_and_counts_real_tokens():
    plain = packed([7, 30, 12])
    padded = packed([7, 30, 12], graph_rows=4)
    assert padded["input_ids"].shape == (1, 256) and padded[PAD_KEY] == 256 - 49
    assert padded["cu_seq_lens_q"].tolist() == [0, 7, 37, 49, 256, 256]  # fixed length: rows + 2
    assert padded["max_length_q"] == 256 and (padded["labels"][0, 49:] == -100).all()
    model = tiny_peft()
    want_loss, want = loss_and_grads(model, plain)
    got_loss, got = loss_and_grads(model, padded)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    with pytest.raises(ValueError, match="3 rows, more than the 2"):
        pad_packed(packed([3, 4, 5]), rows=2)


def test_layers_reached_through_the_dispatcher_train_as_their_own_forward():
    eager = tiny_peft()
    graphed = copy.deepcopy(eager)
    captured = []

    def stand_in(calls, samples, **kwargs):  # what make_graphed_callables would capture, run as it is
        captured.append([s[0].shape for s in samples])
        return calls

    graphs = LayerGraphs(graphed, capture=stand_in)
    batch = packed([9, 40, 3], graph_rows=3)
    want_loss, want = loss_and_grads(eager, batch)
    got_loss, got = loss_and_grads(graphed, batch)
    assert graphs.replays == 1 and captured == [[torch.Size([1, 256, 64])] * 2]
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    loss_and_grads(graphed, packed([5, 6, 7], graph_rows=3))  # the same size: replayed, not captured again
    assert graphs.replays == 2 and len(captured) == 1
    graphed.eval()
    with torch.no_grad():  # evaluation (and generation) stay eager
        graphed(**{k: v for k, v in batch.items() if k != PAD_KEY})
    assert graphs.replays == 2
    graphs.remove()
    assert all("forward" not in layer.__dict__ for layer in graphs.layers)
    state = {k for k in graphed.state_dict() if "lora_" in k}
    assert state == {k for k in eager.state_dict() if "lora_" in k}  # adapter names unchanged: saves load as before


@pytest.mark.parametrize("train, why", [
    ({}, "a CUDA GPU"),
])
def test_graphs_that_cannot_work_here_are_one_line_naming_the_field(train, why):
    cfg = RunConfig.model_validate({"train": {"cuda_graphs": "on", **train}})
    with pytest.raises(ConfigError, match=why) as err:
        speed.resolve(cfg, cuda=False)
    assert err.value.field == "train.cuda_graphs"
    assert speed.resolve(RunConfig.model_validate({}), cuda=False).cuda_graphs is False


def test_graph_rules_on_a_gpu_config(monkeypatch):
    from fixtures import h100_cards

    from loratui.core import devices

    cards = h100_cards(1)
    monkeypatch.setattr(devices, "query_gpus", lambda: cards)
    monkeypatch.setattr(speed, "varlen_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_available", lambda cuda: False)
    ok = RunConfig.model_validate({"method": {"kind": "qlora"}, "train": {"cuda_graphs": "on"}})
    sp = speed.resolve(ok, cuda=True, model_type="llama")
    assert sp.cuda_graphs and not sp.lean_mlp  # lean_mlp redraws dropout from the generator's state: not capturable
    ckpt = RunConfig.model_validate({"method": {"kind": "qlora"},
                                     "train": {"cuda_graphs": "on", "gradient_checkpointing": True}})
    assert speed.resolve(ckpt, cuda=True, model_type="llama").cuda_graphs  # the graphs checkpoint the layers
    offloaded = ckpt.model_copy(deep=True)
    offloaded.train.activation_offload = "on"
    assert speed.resolve(offloaded, cuda=True, model_type="llama").cuda_graphs  # the checkpoints to host memory
    for train, why in [({"activation_offload": "on"}, "activation_offload"),
                       ({"attention": "sdpa"}, "varlen"), ({"gpus": 2}, "one card")]:
        cards[:] = h100_cards(4 if "gpus" in train else 1)
        cfg = RunConfig.model_validate({"method": {"kind": "qlora"}, "train": {"cuda_graphs": "on", **train}})
        with pytest.raises(ConfigError, match=why):
            speed.resolve(cfg, cuda=True, model_type="llama")
    cards[:] = h100_cards(4)  # train.gpus auto on four cards: four processes under the launcher's own plan
    with pytest.raises(ConfigError, match="one card"):
        speed.resolve(ok, cuda=True, model_type="llama")
    full = RunConfig.model_validate({"method": {"kind": "full"}, "train": {"cuda_graphs": "on"}})
    with pytest.raises(ConfigError, match="LoRA method"):
        speed.resolve(full, cuda=True, model_type="llama")


def test_a_capture_that_fails_leaves_the_run_eager_and_says_so_once():
    eager = tiny_peft()
    graphed = copy.deepcopy(eager)
    said = []

    def broken(calls, samples, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    graphs = LayerGraphs(graphed, capture=broken, notify=said.append)
    batch = packed([9, 40, 3], graph_rows=3)
    want_loss, want = loss_and_grads(eager, batch)
    got_loss, got = loss_and_grads(graphed, batch)
    loss_and_grads(graphed, packed([100, 6, 7], graph_rows=3))  # another size: no second attempt
    assert got_loss == pytest.approx(want_loss, rel=1e-6) and all(torch.allclose(got[k], want[k]) for k in want)
    assert graphs.replays == 0 and len(said) == 1
    assert "CUDA graphs off for the rest of the run" in said[0] and "operation not permitted" in said[0]
    assert "more detail" not in said[0]  # one line


def _saved_bytes(model, batch) -> tuple[float, dict]:
    """The loss, the adapters' gradients, and how many bytes autograd kept for the backward pass."""
    kept = []

    def pack(t):
        kept.append(t.numel() * t.element_size())
        return t

    torch.manual_seed(11)  # the dropout masks
    model.train()
    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):  # the forward pass only
        loss = model(**{k: v for k, v in batch.items() if k != PAD_KEY}).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads, sum(kept)


@pytest.mark.parametrize("offload", [False, True])
def test_checkpointed_graphs_keep_only_layer_inputs_and_train_as_torch_checkpointing_with_dropout(offload):
    from loratui.train.graphs_ckpt import eager_capture

    plain = tiny_peft(dropout=0.2)
    reference = copy.deepcopy(plain)
    reference.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    graphed = copy.deepcopy(plain)
    graphed.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    graphs = LayerGraphs(graphed, capture=eager_capture, checkpoint=True, offload=offload)
    assert not any(layer.gradient_checkpointing for layer in graphs.layers)  # the graphs checkpoint, not transformers
    batch = packed([9, 40, 3], graph_rows=3)
    want_loss, want, _ = _saved_bytes(reference, batch)
    got_loss, got, kept = _saved_bytes(graphed, batch)
    _, _, unsaved = _saved_bytes(plain, batch)
    assert graphs.replays == 1
    assert graphs.shared.grads[0] is graphs.shared.grads[1]  # one set of gradient buffers for same-shaped layers
    # the recomputation draws the forward pass's dropout masks: the same loss and gradients as torch's checkpointing
    assert got_loss == pytest.approx(want_loss, rel=1e-6)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    assert kept < unsaved / 3  # the layers keep their inputs only (offloaded: not even those)
    if offload:
        assert graphs.offloader.host[0].numel() == 256 * 64 and not graphs.offloader.kept
    other = packed([20, 6, 11], graph_rows=3)  # the same size, other sequence boundaries: replayed with its own
    want_loss, want, _ = _saved_bytes(reference, other)
    got_loss, got, _ = _saved_bytes(graphed, other)
    assert graphs.replays == 2 and got_loss == pytest.approx(want_loss, rel=1e-6)
    assert all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)
    graphed.eval()
    with torch.no_grad():  # evaluation stays eager and unchanged
        out = graphed(**{k: v for k, v in batch.items() if k != PAD_KEY}).loss
    assert graphs.replays == 2 and torch.isfinite(out)


def test_a_checkpointed_capture_that_fails_still_checkpoints_eagerly():
    plain = tiny_peft()
    graphed = copy.deepcopy(plain)
    said = []

    def broken(fn):
        raise RuntimeError("out of memory while capturing")

    graphs = LayerGraphs(graphed, capture=broken, notify=said.append, checkpoint=True)
    batch = packed([9, 40, 3], graph_rows=3)
    want_loss, want, unsaved = _saved_bytes(plain, batch)
    got_loss, got, kept = _saved_bytes(graphed, batch)
    assert got_loss == pytest.approx(want_loss, rel=1e-6) and all(torch.allclose(got[k], want[k], atol=1e-6)
                                                                 for k in want)
    assert kept < unsaved / 3 and graphs.replays == 0 and len(said) == 1 and "out of memory" in said[0]
