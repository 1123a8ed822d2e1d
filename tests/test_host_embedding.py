"""The input embeddings in host memory (train.embedding_offload, issue 16): the same loss and adapter gradients as
the table on the device, the table gone from the model's parameters, refused where a head is tied to it or the
table trains; the estimate leaves the table out; the memory fit moves it when memory is short."""

from __future__ import annotations

import copy

import pytest
import torch

from loratui.core.config import RunConfig
from loratui.core.errors import ConfigError
from loratui.train import fit
from loratui.train.host_embedding import HostEmbedding, move_to_host, why_not

GiB = 1024**3


def tiny(tied: bool = False, modules_to_save=None):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    model = LlamaForCausalLM(cfg)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                                            modules_to_save=modules_to_save))


def loss_and_grads(model, ids):
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def untied_llama(tmp_path_factory):
    """A model folder whose head is not tied to its input embeddings (as the Llama-3-8B shape)."""
    from transformers import LlamaConfig

    out = tmp_path_factory.mktemp("untied")
    LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=False).save_pretrained(str(out))
    return out


@pytest.fixture
def h200(monkeypatch):
    """speed.resolve as on the H200 (varlen attention and Liger available), on this CPU."""
    from loratui.train import speed

    monkeypatch.setattr(speed, "varlen_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_supports", lambda model_type: True)


def test_a_table_in_host_memory_trains_the_same_and_leaves_the_parameters():
    model = tiny()
    moved = copy.deepcopy(model)
    ids = torch.randint(0, 300, (2, 12))
    want_loss, want = loss_and_grads(model, ids)
    assert move_to_host(moved, torch.device("cpu")) == 0  # nothing was on a card
    emb = moved.get_input_embeddings()
    assert isinstance(emb, HostEmbedding) and emb.weight.shape == (300, 32)
    assert not any("embed_tokens" in n for n, _ in moved.named_parameters())  # the optimizer never sees it
    assert not any("embed_tokens" in k for k in moved.state_dict())
    for _ in range(2):  # the staging buffer is reused: a second step still reads its own rows
        got_loss, got = loss_and_grads(moved, ids)
        assert got_loss == pytest.approx(want_loss, rel=1e-6)
        assert want.keys() == got.keys() and all(torch.allclose(got[k], want[k]) for k in want)
    other = torch.randint(0, 300, (1, 5))
    assert torch.equal(emb(other), model.get_input_embeddings()(other))


def test_a_tied_or_trained_table_stays_where_it_is():
    assert why_not(tiny(tied=True)) == "tied"
    assert why_not(tiny(modules_to_save=["embed_tokens"])) == "trained"
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        move_to_host(tiny(tied=True), torch.device("cpu"))


def test_on_needs_a_gpu_and_a_lora_method():
    from loratui.train import speed

    cfg = RunConfig.model_validate({"train": {"embedding_offload": "on"}})
    with pytest.raises(ConfigError, match="needs a CUDA GPU") as err:
        speed.resolve(cfg, cuda=False)
    assert err.value.field == "train.embedding_offload"
    full = RunConfig.model_validate({"method": {"kind": "full"}, "train": {"embedding_offload": "on"}})
    with pytest.raises(ConfigError, match="a LoRA method"):
        speed.embedding_offload(full, cuda=True)
    assert speed.embedding_offload(cfg, cuda=True)


def test_the_estimate_leaves_an_untied_table_out(untied_llama, tiny_llama, h200):
    from loratui.train.estimate import estimate_memory

    for folder, drop in ((untied_llama, 32000 * 256 * 2), (tiny_llama, 0)):  # a tied head keeps its table
        cfg = RunConfig.model_validate({"model": {"name": str(folder)}, "method": {"kind": "qlora"}})
        before = estimate_memory(cfg, compare=False, cuda=True).rows[0].weights
        cfg.train.embedding_offload = "on"
        assert before - estimate_memory(cfg, compare=False, cuda=True).rows[0].weights == drop


def test_the_fit_moves_the_table_when_memory_is_short():
    def toy(cfg: RunConfig, ckpt_layers, offload) -> tuple[int, int]:
        """5 GiB of weights, a 1 GiB table unless it moved, 0.25 GiB of activations a row (a tenth checkpointed)."""
        ckpt = cfg.train.gradient_checkpointing or ckpt_layers is not None
        act = 0.25 * GiB * cfg.train.batch_size * (0.1 if ckpt else 1)
        return int(5 * GiB + (0 if cfg.train.embedding_offload == "on" else GiB) + act), 32

    cfg = RunConfig.model_validate({"method": {"kind": "qlora"}, "train": {"batch_size": 4}})
    f = fit.plan(cfg, int(6.5 * GiB), estimator=toy)  # short by half the table: moving it is the whole fix
    assert f.fits and f.embedding_offload and not f.checkpointing and f.batch_size == 4
    assert "input embeddings in host memory" in f.message()
    assert f.apply(cfg).train.embedding_offload == "on" and f.as_event()["embedding_offload"]
    f = fit.plan(cfg, int(5.3 * GiB), estimator=toy)  # and with checkpointing where that is not enough
    assert f.fits and f.embedding_offload and f.checkpointing
    assert not fit.plan(cfg, 7 * GiB, estimator=toy).embedding_offload  # it fits: nothing moves
    cfg.train.embedding_offload = "off"  # the user's word stands
    assert not fit.plan(cfg, int(6.5 * GiB), estimator=toy).embedding_offload


def test_the_fit_takes_8bit_adamw_where_the_optimizer_is_left_on_auto(monkeypatch):
    """Short of memory, the optimizer's states in 8 bits (Unsloth's recipe uses it) before a smaller micro-batch;
    a user's own optimizer stays."""
    monkeypatch.setattr(fit, "_has_bitsandbytes", lambda: True)

    def toy(cfg: RunConfig, ckpt_layers, offload) -> tuple[int, int]:
        """5 GiB of weights and a 1 GiB table (it stays), 1 GiB of AdamW states (a quarter in 8 bits), 0.25 GiB of
        activations a row."""
        states = 0.25 * GiB if cfg.train.optimizer == "adamw_8bit" else GiB
        return int(6 * GiB + states + 0.25 * GiB * cfg.train.batch_size), 32

    cfg = RunConfig.model_validate({"method": {"kind": "qlora"}, "train": {"batch_size": 4, "activation_offload": "off",
                                                                           "embedding_offload": "off"}})
    f = fit.plan(cfg, int(7.5 * GiB), estimator=toy)  # 8 GiB as written: the states in 8 bits fit it
    assert f.fits and f.optimizer == "adamw_8bit" and f.batch_size == 4 and not f.checkpointing
    assert "8-bit AdamW" in f.message() and f.apply(cfg).train.optimizer == "adamw_8bit"
    cfg.train.optimizer = "adamw_torch_fused"  # the user's choice stands: a smaller micro-batch or checkpointing
    assert fit.plan(cfg, int(7.5 * GiB), estimator=toy).optimizer is None
