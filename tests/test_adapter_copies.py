"""16-bit copies of the adapters' fp32 weights for the in-place forward (loratui.train.adapter_copies): under bf16
autocast, the same loss and fp32 gradients as autocast's own casts, bit for bit, with fewer ops a step."""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from loratui.train.adapter_copies import install_adapter_copies
from loratui.train.inplace_lora import inplace_lora
from test_fused_lora import tiny_peft


def bf16_pair(dropout: float = 0.1):
    """Two copies of a bf16 LoRA run's model (the frozen base in bf16, the adapters in fp32, the in-place forward):
    the second with the adapters' 16-bit copies."""
    model = tiny_peft(dropout=dropout)
    for p in model.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
    other = copy.deepcopy(model)  # before the forward is installed: it closes over its own layer
    assert inplace_lora(model) == 14 and inplace_lora(other) == 14
    return model, other, install_adapter_copies(other)


def micro_batch(model, ids, seed: int) -> float:
    """One forward and backward under bf16 autocast (the copies' gradients then collected, as the Trainer does)."""
    model.train()
    torch.manual_seed(seed)  # the same dropout masks on both sides
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    copies = getattr(model, "loratui_adapter_copies", None)
    if copies is not None:
        copies.collect()
    return loss.item()


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_copies_train_exactly_as_autocast_s_casts():
    cast, fast, copies = bf16_pair()
    assert copies is not None and len(copies.copies) == 28  # A and B of 7 projections x 2 layers
    assert all(c.dtype == torch.bfloat16 for c in copies.copies)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    opts = [torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2) for m in (cast, fast)]
    copies.on_train_begin(None, None, None, optimizer=opts[1])
    for step in range(3):  # two micro-batches a step: gradients accumulate in fp32 on both sides
        for model, opt in zip((cast, fast), opts):
            opt.zero_grad(set_to_none=True)
        losses = [[micro_batch(m, ids[i:i + 1], seed=10 * step + i) for i in range(2)] for m in (cast, fast)]
        assert losses[0] == losses[1], step
        a, b = grads(cast), grads(fast)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), step
        assert all(c.grad is None for c in copies.copies)  # moved into the fp32 weights' gradients
        for opt in opts:
            opt.step()  # the copies follow the weights through the optimizer's post-step hook
        assert all(torch.equal(c, p.detach().to(torch.bfloat16)) for c, p in zip(copies.copies, copies.params))
    # a roll-back trains again with a new optimizer: the copies follow that one
    opt = torch.optim.SGD(copies.params, lr=1.0)
    copies.on_train_begin(None, None, None, optimizer=opt)
    micro_batch(fast, ids[:1], seed=99)
    opt.step()
    assert all(torch.equal(c, p.detach().to(torch.bfloat16)) for c, p in zip(copies.copies, copies.params))
    opts[1].step()  # the old optimizer no longer refreshes them
    assert len(opts[1]._optimizer_step_post_hooks) == 0


def test_copies_launch_fewer_ops_a_step():
    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:
                self.ops[str(func.overloadpacket)] += 1
            return func(*args, **(kwargs or {}))

    cast, fast, _ = bf16_pair(dropout=0.0)
    ids = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    counts = []
    for model in (cast, fast):
        micro_batch(model, ids, seed=0)  # a first pass outside the count
        model.zero_grad()
        with Count() as c:
            micro_batch(model, ids, seed=0)
        counts.append(c.ops)
    # autocast casts both weights of each of the 14 projections forward and back; the copies' gradients go into
    # the fp32 gradients in one foreach op
    assert counts[0]["aten._to_copy"] - counts[1]["aten._to_copy"] >= 4 * 14, (counts[0]["aten._to_copy"],
                                                                              counts[1]["aten._to_copy"])
    assert sum(counts[1].values()) < sum(counts[0].values()) - 2 * 14


def test_a_model_without_fp32_adapters_on_a_16bit_base_gets_no_copies():
    assert install_adapter_copies(tiny_peft()) is None  # fp32 base: autocast off, nothing to cast


def test_through_the_trainer_the_copies_follow_every_step(tmp_path):
    """The Trainer's loop as the engine runs it (LoratuiTrainer: collected after each micro-batch's backward;
    refreshed as training starts and after each optimizer step of accelerate's wrapped optimizer): the same weights
    after three steps of two micro-batches as with autocast's casts."""
    from datasets import Dataset
    from transformers import TrainingArguments

    from loratui.train.trainers import token_counting_trainer

    rows = torch.randint(0, 100, (12, 10), generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict({"input_ids": rows.tolist(), "labels": rows.tolist()})
    cast, fast, copies = bf16_pair()
    out = []
    for model in (cast, fast):
        args = TrainingArguments(output_dir=str(tmp_path / str(len(out))), bf16=True, use_cpu=True, max_steps=3,
                                 per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-2,
                                 report_to="none", save_strategy="no", seed=5, data_seed=5, disable_tqdm=True)
        trainer = token_counting_trainer()(model=model, args=args, train_dataset=data,
                                          callbacks=[copies] if model is fast else [])
        trainer.train()
        out.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])
    assert not all(torch.equal(out[0][k], v) for k, v in grads_at_start(cast).items())  # it trained
    assert all(torch.equal(c, p.detach().to(torch.bfloat16)) for c, p in zip(copies.copies, copies.params))


def grads_at_start(model) -> dict[str, torch.Tensor]:
    fresh = tiny_peft()
    return {n: p.detach() for n, p in fresh.named_parameters() if p.requires_grad}


def test_the_copies_follow_the_model_to_its_device_as_training_starts():
    """The engine makes the copies before the Trainer moves the model to the card; a copy left behind failed the
    first forward on the GPU ('mat2 is on cpu')."""
    _, model, copies = bf16_pair()
    model.to("meta")
    layer = next(m for m in model.modules() if getattr(m, "loratui_copies", None) is not None)
    assert layer.loratui_copies[0].device.type == "cpu"
    copies.on_train_begin(None, None, None, optimizer=None)
    assert all(c.device.type == "meta" and c.dtype == torch.bfloat16 and c.requires_grad for c in copies.copies)
    assert layer.loratui_copies[0] is copies.copies[copies.layers.index(layer) * 2]
    assert layer.loratui_copies[0].device.type == "meta" and layer.loratui_copies[1].shape == layer.lora_B["default"].weight.shape
