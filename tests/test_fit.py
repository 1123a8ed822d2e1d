"""The memory fit (issue 16): a run that does not fit its budget gets the cheapest savers that make it fit, keeps its
effective batch, says what it chose; what the user set stays; checkpointing some layers really checkpoints those."""

from __future__ import annotations

import pytest

from loratui.core.config import RunConfig
from loratui.train import fit, fit_run

GiB = 1024**3
LAYERS = 32


def toy(cfg: RunConfig, ckpt_layers, offload) -> tuple[int, int]:
    """6 GiB static; 0.5 GiB of activations a layer per micro-batch of 4; a checkpointed layer keeps a tenth (its
    input); offload keeps 70% of what is not checkpointed and two layer inputs."""
    per = 0.5 * GiB * cfg.train.batch_size / 4
    if cfg.train.gradient_checkpointing or ckpt_layers is not None:
        k = LAYERS if ckpt_layers is None else ckpt_layers
        act = (min(k, 2) if offload else k) * per / 10 + (LAYERS - k) * per * (0.7 if offload else 1) + per
    else:
        act = LAYERS * per * (0.7 if offload else 1)
    return int(6 * GiB + act), LAYERS


@pytest.fixture(autouse=True)
def prices(monkeypatch):
    """The logic under test, not the calibration: fixed prices for the savers."""
    for name, value in (("CKPT_ALL_COST", 0.55), ("OFFLOAD_COST", 1.7), ("CKPT_OFFLOAD_COST", 0.05),
                        ("HALF_BATCH_COST", 0.15)):
        monkeypatch.setattr(fit, name, value)


def cfg(**train) -> RunConfig:
    return RunConfig.model_validate({"train": {"batch_size": 4, **train}})


def test_a_run_that_fits_runs_as_written():
    f = fit.plan(cfg(), 40 * GiB, estimator=toy)
    assert f.fits and not f.changed and f.batch_size == 4 and not f.checkpointing and not f.offload
    assert "runs as configured" in f.message()


def test_the_fewest_layers_are_checkpointed_when_offload_is_off():
    f = fit.plan(cfg(activation_offload="off"), 13 * GiB, estimator=toy)
    assert f.fits and f.checkpointing and f.ckpt_layers is not None and not f.offload
    k, at = f.ckpt_layers, cfg(batch_size=f.batch_size)
    assert toy(at, k, False)[0] <= 13 * GiB < toy(at, k - 1, False)[0]  # one layer fewer would not fit
    assert f"gradient checkpointing on {k} of 32 layers" in f.message()
    run_cfg = f.apply(cfg(activation_offload="off"))
    assert run_cfg.train.gradient_checkpointing and run_cfg.train.batch_size * run_cfg.train.grad_accum == 4


def test_the_cheapest_saver_wins_and_the_effective_batch_is_kept(monkeypatch):
    f = fit.plan(cfg(), 9 * GiB, estimator=toy)
    assert f.checkpointing and not f.offload and f.batch_size == 4 and f.ckpt_layers == 30  # 30 of 32 fit
    f = fit.plan(cfg(), 6.8 * GiB, estimator=toy)
    assert f.checkpointing and f.offload and f.ckpt_layers is None and f.batch_size == 4  # offloaded checkpointing
    assert "activation offload" in f.message() and "all 32 layers" in f.message()
    monkeypatch.setattr(fit, "CKPT_ALL_COST", 2.0)  # recomputing dearer than smaller micro-batches
    f = fit.plan(cfg(grad_accum=2), 12 * GiB, estimator=toy)
    assert f.fits and not f.checkpointing and f.batch_size == 1 and f.grad_accum == 8
    assert "the same 8 examples a step" in f.message()
    run_cfg = f.apply(cfg(grad_accum=2))
    assert (run_cfg.train.batch_size, run_cfg.train.grad_accum) == (1, 8)


def test_nothing_fits_says_so_and_takes_the_leanest():
    f = fit.plan(cfg(), 5 * GiB, estimator=toy)
    assert not f.fits and f.batch_size == 1 and f.estimate < f.needed
    assert "may run out of memory" in f.message()


def test_what_the_user_set_stays():
    assert not fit.plan(cfg(fit="off"), 8 * GiB, estimator=toy).changed  # fit: off runs as written
    f = fit.plan(cfg(gradient_checkpointing=True), 7 * GiB, estimator=toy)
    assert f.checkpointing and f.ckpt_layers is None and f.offload  # the user's checkpointing: every layer
    f = fit.plan(cfg(gradient_checkpointing=True, activation_offload="off"), 7 * GiB, estimator=toy)
    assert f.checkpointing and f.ckpt_layers is None and not f.offload and f.batch_size == 1


def test_budget_from_config_or_free_memory():
    assert fit.budget_bytes(cfg(memory_budget=16), 80 * GiB) == (16 * GiB, "train.memory_budget")
    got, source = fit.budget_bytes(cfg(), 20 * GiB)
    assert got == int(20 * GiB * fit.AUTO_SHARE) and "free on the card" in source


def test_bad_budget_is_one_line():
    from loratui.core.errors import ConfigError
    from loratui.core.config import config_from_dict

    with pytest.raises(ConfigError, match="train.memory_budget"):
        config_from_dict({"train": {"memory_budget": 0.5}})


def test_the_real_estimate_checkpoints_layers_on_a_tiny_llama(tiny_llama, tmp_path):
    """The estimator the engine uses (meta model, sampled data): checkpointing more layers never costs memory,
    and the plan it makes fits what it says."""
    c = RunConfig.model_validate({
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_length": 64},
        "train": {"batch_size": 4, "activation_offload": "off"}})
    est = fit_run.estimator_for(c)
    none, layers = est(c, None, False)
    one, _ = est(c, 1, False)
    full, _ = est(c, layers, False)
    assert layers == 2 and full < none and full <= one
    eight = c.model_copy(deep=True)
    eight.train.optimizer = "adamw_8bit"  # the estimator prices the config it is handed, optimizer included
    assert est(eight, None, False)[0] < none
    from loratui.train.estimate import estimate_memory

    # the method applied once and reused, estimates kept: the same figure as the estimate made on its own
    assert none == estimate_memory(c, compare=False).rows[0].total
    assert fit_run.estimator_for(eight)(eight, None, False) == est(eight, None, False)
    budget = (full + none) // 2
    f = fit.plan(c, budget, estimator=est)
    assert f.fits and f.estimate <= budget and f.changed


def test_checkpointing_some_layers_recomputes_only_those(tiny_llama):
    """limit_checkpointing keeps the first k decoder layers checkpointed: their forward runs again in backward,
    the others' does not; the gradients are the same as without checkpointing."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    ids = torch.randint(0, 1000, (2, 16))

    def grads_and_calls(k):
        model.zero_grad()
        model.gradient_checkpointing_disable()
        if k is not None:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            assert fit_run.limit_checkpointing(model, k) == k
        model.train()
        calls = [0] * len(model.model.layers)
        hooks = [layer.input_layernorm.register_forward_pre_hook(lambda m, i, j=j: calls.__setitem__(j, calls[j] + 1))
                 for j, layer in enumerate(model.model.layers)]
        model(input_ids=ids, labels=ids).loss.backward()
        for h in hooks:
            h.remove()
        return [p.grad.clone() for p in model.parameters()], calls

    plain, calls = grads_and_calls(None)
    assert calls == [1, 1]
    partial, calls = grads_and_calls(1)
    assert calls == [2, 1]  # layer 0 recomputed in the backward pass, layer 1 not
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, partial))


def test_room_to_spare_buys_speed_on_a_quantized_base():
    """QLoRA's memory-for-speed levers on auto go off when the run still fits: Liger first (+29% measured), then the
    lean MLP; a 16-bit run, a tight budget or an explicit setting keeps them."""
    def costly(c, k, offload):
        total, layers = toy(c, k, offload)
        return total + int(7.8 * GiB) * (c.train.liger == "off") + 2 * GiB * (c.train.lean_mlp == "off"), layers

    q = RunConfig.model_validate({"method": {"kind": "qlora"}, "train": {"batch_size": 4}})
    f = fit.plan(q, 40 * GiB, estimator=costly)
    assert f.fits and f.faster == ["liger", "lean_mlp"] and f.estimate == costly(f.apply(q), None, False)[0]
    assert (f.apply(q).train.liger, f.apply(q).train.lean_mlp) == ("off", "off")
    assert "Liger's kernels and the lean MLP off for speed" in f.message()
    assert fit.plan(q, 30 * GiB, estimator=costly).faster == ["liger"]  # 22 + 7.8 fits, + 2 more does not
    assert fit.plan(q, 25 * GiB, estimator=costly).faster == ["lean_mlp"]
    assert fit.plan(q, 23 * GiB, estimator=costly).faster == []
    pinned = RunConfig.model_validate({"method": {"kind": "qlora"}, "train": {"batch_size": 4, "liger": "on"}})
    assert fit.plan(pinned, 40 * GiB, estimator=costly).faster == ["lean_mlp"]
    assert fit.plan(cfg(), 40 * GiB, estimator=costly).faster == []  # a 16-bit base: Liger stays (it is faster there)


def test_cuda_graphs_go_on_only_with_room_for_them_where_they_apply(monkeypatch):
    from loratui.train import speed

    monkeypatch.setattr(speed, "varlen_available", lambda cuda: cuda)  # a GPU as the engine sees one
    monkeypatch.setattr(speed, "liger_available", lambda cuda: False)
    room = int(22 * GiB * fit.GRAPHS_MEMORY)  # 22 GiB as written: with the graphs' memory that fits
    f = fit.plan(cfg(), room + 1, estimator=toy)
    assert f.graphs and f.apply(cfg()).train.cuda_graphs == "on" and f.estimate == room
    assert "CUDA graphs on for speed" in f.message() and f.as_event()["graphs"] is True
    assert not fit.plan(cfg(), room - GiB, estimator=toy).graphs  # fits, but not with the graphs' memory
    assert not fit.plan(cfg(cuda_graphs="off"), 80 * GiB, estimator=toy).graphs  # the user's word stays
    user_ckpt = fit.plan(cfg(gradient_checkpointing=True), 80 * GiB, estimator=toy)  # the graphs checkpoint
    assert user_ckpt.graphs and user_ckpt.checkpointing and user_ckpt.ckpt_layers is None
    assert user_ckpt.estimate == int(toy(cfg(gradient_checkpointing=True), None, False)[0] * fit.GRAPHS_CKPT_MEMORY)
    assert not fit.plan(cfg(fit="off"), 80 * GiB, estimator=toy).graphs
    busy = fit.plan(cfg(), 80 * GiB, estimator=toy_with_work(fit.GRAPHS_WORK * 2))  # room, but a busy card
    assert not busy.graphs and "runs as configured; CUDA graphs left off: steps this large" in busy.message()
    assert busy.note and not fit.plan(cfg(cuda_graphs="off"), 80 * GiB, estimator=toy_with_work(fit.GRAPHS_WORK * 2)).note
    assert fit.plan(cfg(), 80 * GiB, estimator=toy_with_work(fit.GRAPHS_WORK / 2)).graphs


def toy_with_work(work):
    def estimator(c, k, offload):
        return toy(c, k, offload)
    estimator.work = lambda c: work
    return estimator


def test_checkpointed_graphs_where_memory_is_short_or_steps_are_small(monkeypatch):
    """Short of memory, every layer checkpointed and replayed as graphs (offloading the checkpoints only when that
    is what fits) instead of the eager savers; with room for the run as written but not for graphs without
    checkpointing, checkpointed graphs only where a step is small enough to wait on the host."""
    from loratui.train import speed

    monkeypatch.setattr(speed, "varlen_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_available", lambda cuda: False)
    tight = fit.plan(cfg(), 10 * GiB, estimator=toy)  # 22 GiB as written
    assert tight.graphs and tight.checkpointing and not tight.offload and tight.batch_size == 4 and tight.fits
    assert tight.estimate == int(toy(cfg(), LAYERS, False)[0] * fit.GRAPHS_CKPT_MEMORY) <= 10 * GiB
    run = tight.apply(cfg())
    assert (run.train.cuda_graphs, run.train.gradient_checkpointing) == ("on", True)
    msg = tight.message()
    assert "CUDA graphs on (each checkpointed layer recomputed in its graph)" in msg and "less step time" in msg
    offloaded = fit.plan(cfg(), 9 * GiB, estimator=toy)  # the checkpoints to host memory, still at batch 4
    assert offloaded.graphs and offloaded.offload and offloaded.fits and offloaded.batch_size == 4
    assert offloaded.estimate == int(toy(cfg(), LAYERS, True)[0] * fit.GRAPHS_CKPT_MEMORY)
    assert "activation offload to host memory" in offloaded.message()
    assert fit.plan(cfg(activation_offload="off"), 9 * GiB, estimator=toy).batch_size == 2  # the user's word
    halved = fit.plan(cfg(), 7.3 * GiB, estimator=toy)  # not at batch 4: at micro-batch 2, before the eager savers
    assert halved.graphs and halved.fits and (halved.batch_size, halved.grad_accum) == (2, 2)
    assert "micro-batch 2 x 2 accumulation" in halved.message() and fit.GRAPHS_CKPT_TEXT in halved.message()
    eager = fit.plan(cfg(), 6.5 * GiB, estimator=toy)  # checkpointed graphs fit at no micro-batch: the eager savers
    assert not eager.graphs and eager.checkpointing and eager.fits
    assert not fit.plan(cfg(cuda_graphs="off"), 10 * GiB, estimator=toy).graphs

    # fits as written, not with the graphs' memory
    small = fit.plan(cfg(), 35 * GiB, estimator=toy_with_work(fit.GRAPHS_WORK / 2))
    assert small.graphs and small.checkpointing and "faster than running as configured" in small.message()
    assert not fit.plan(cfg(), 35 * GiB, estimator=toy_with_work(fit.GRAPHS_WORK * 2)).graphs  # a busy card: as written
    assert fit.plan(cfg(), 10 * GiB, estimator=toy_with_work(fit.GRAPHS_WORK / 2)).graphs  # short of memory: graphs
    busy = fit.plan(cfg(), 10 * GiB, estimator=toy_with_work(fit.GRAPHS_WORK * 2))  # ...but not on long steps
    assert not busy.graphs and busy.fits  # the eager savers


def test_graphs_the_user_turned_on_are_in_the_estimate():
    assert fit.graphs_factor(cfg()) == 1.0  # auto: priced where the fit turns them on
    assert fit.graphs_factor(cfg(cuda_graphs="on")) == fit.GRAPHS_MEMORY
    qlora = RunConfig.model_validate({"method": {"kind": "qlora"}, "train": {"cuda_graphs": "on"}})
    assert fit.graphs_factor(qlora) == fit.GRAPHS_MEMORY_QUANTIZED > fit.GRAPHS_MEMORY  # dequantized weights kept
    assert fit.graphs_factor(cfg(cuda_graphs="on", gradient_checkpointing=True)) == fit.GRAPHS_CKPT_MEMORY


def toy_wide(extra: int):
    """toy, with Liger's wide loss chunks costing ``extra`` bytes (the real estimator prices their logits chunk)."""
    def estimate(c: RunConfig, ckpt_layers, offload) -> tuple[int, int]:
        total, layers = toy(c, ckpt_layers, offload)
        return total + (extra if c.train.wide_loss_chunks == "on" else 0), layers
    estimate.model_type = "llama"  # a model Liger patches (the real estimator says the model's own type)
    return estimate


def test_wide_loss_chunks_take_only_room_left_over(h200):
    narrow = fit.plan(cfg(wide_loss_chunks="off"), 40 * GiB, estimator=toy_wide(GiB))
    wide = fit.plan(cfg(), 40 * GiB, estimator=toy_wide(GiB))
    assert wide.wide_loss_chunks and not narrow.wide_loss_chunks  # the user's off stays off
    assert wide.estimate == narrow.estimate + GiB
    assert "wide loss chunks for speed" in wide.message() and "wide" not in narrow.message()
    # wide chunks alone (no graphs: the 8B LoRA step) are said in the engine's log; a run as configured is not
    only_wide = fit.plan(cfg(cuda_graphs="off"), 40 * GiB, estimator=toy_wide(GiB))
    assert only_wide.wide_loss_chunks and not only_wide.changed and only_wide.worth_saying
    assert not fit.plan(cfg(cuda_graphs="off", wide_loss_chunks="off"), 40 * GiB, estimator=toy_wide(GiB)).worth_saying
    assert wide.apply(cfg()).train.wide_loss_chunks == "on" and wide.as_event()["wide_loss_chunks"] is True
    # no room for them beside what runs as configured: Liger's own chunks, nothing said
    tight = fit.plan(cfg(), narrow.estimate + GiB // 2, estimator=toy_wide(GiB))
    assert tight.fits and not tight.wide_loss_chunks and "wide" not in tight.message()
    # a run that needs savers to fit keeps its memory for them
    short = fit.plan(cfg(), 12 * GiB, estimator=toy_wide(GiB // 64))
    assert short.changed and not short.wide_loss_chunks
    # no fused cross-entropy to widen (the estimate does not change: no Liger, a preference objective, a CPU)
    assert not fit.plan(cfg(), 40 * GiB, estimator=toy).wide_loss_chunks


def test_wide_loss_chunks_stay_off_where_the_fit_turned_liger_off(h200):
    """A quantized base with room: the fit turns Liger off for speed, so there is no fused cross-entropy to widen.
    It chose both, and the engine refused its own choice ("train.wide_loss_chunks on needs Liger's fused
    cross-entropy"): 8B QLoRA with loratui's defaults failed on an 80 GB card."""
    from loratui.train import speed

    qlora = RunConfig.model_validate({"method": {"kind": "qlora"}, "train": {"batch_size": 4}})
    f = fit.plan(qlora, 60 * GiB, estimator=toy_wide(GiB))
    assert "liger" in f.faster and not f.wide_loss_chunks
    assert speed.resolve(f.apply(qlora), cuda=True).liger is False  # the engine takes the fit's choice
    dpo = RunConfig.model_validate({"method": {"objective": "dpo"}, "data": {"format": "preference"},
                                    "train": {"batch_size": 4}})
    assert not fit.plan(dpo, 60 * GiB, estimator=toy_wide(GiB)).wide_loss_chunks  # TRL's own chunks
