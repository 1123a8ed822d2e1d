"""The memory fit on the engine's side: the real estimator (the model built on the meta device, sampled data),
the fit of a run to the card it starts on, checkpointing only the layers the fit chose, and ``loratui estimate``'s
preview of the fit. The choices themselves are loratui.train.fit's."""

from __future__ import annotations

from loratui.core.config import RunConfig
from loratui.core.errors import LoratuiError
from loratui.train.fit import Fit, GiB, budget_bytes, graphs_factor, plan


def estimator_for(cfg: RunConfig):
    """The real estimate, with the model built once: (bytes, decoder layers) for a config and savers."""
    import copy
    import dataclasses

    import torch

    from loratui.train import estimate as est
    from loratui.train import models

    model_config = models.load_model_config(cfg)
    shape = est.model_shape(model_config, cfg.model.task)
    cuda = torch.cuda.is_available()
    lev = est._levers(cfg, cuda, getattr(model_config, "model_type", None))
    meta = models.build_meta_model(cfg, model_config)
    params = sum(p.numel() for p in meta.parameters())
    tokens_by_batch: dict[tuple[int, int], object] = {}
    wrapped_by_method: dict[str, tuple] = {}  # the meta model with the method applied: the fit changes train only
    estimates: dict[tuple, tuple[int, int]] = {}  # the fit asks for the same config more than once (76 -> 51, 8B)

    def step_tokens(c: RunConfig):
        key = (c.train.batch_size, c.train.grad_accum)
        if key not in tokens_by_batch:
            tokens_by_batch[key] = est.step_tokens(c, lev.packing)
        return tokens_by_batch[key]

    def run(c: RunConfig, ckpt_layers: int | None, offload: bool) -> tuple[int, int]:
        tokens = step_tokens(c)
        checkpointing = c.train.gradient_checkpointing or ckpt_layers is not None
        c2 = c
        if checkpointing != c.train.gradient_checkpointing:
            c2 = c.model_copy(deep=True)
            c2.train.gradient_checkpointing = checkpointing
        own = lev if (c.train.liger, c.train.lean_mlp) == (cfg.train.liger, cfg.train.lean_mlp) else \
            est._levers(c, cuda, getattr(model_config, "model_type", None))
        vlev = dataclasses.replace(own, ckpt_layers=ckpt_layers, offload=offload and cuda,
                                   host_embedding=cuda and c.train.embedding_offload == "on",
                                   optimizer=est._optimizer(c, cuda),
                                   lean_mlp=own.lean_mlp and not checkpointing)
        method = c.method.model_dump_json() + c.lora.model_dump_json()
        if method not in wrapped_by_method:  # peft's wrapping is most of an estimate's time (0.4 of 0.56 s, 8B)
            wrapped_by_method[method] = est._meta_trainable(c, copy.deepcopy(meta))
        row = est._estimate_row("fit", c2, meta, shape, vlev, tokens, prepared=wrapped_by_method[method])
        return int(row.total * graphs_factor(c2) if cuda else row.total), shape.layers

    def cached(c: RunConfig, ckpt_layers: int | None, offload: bool) -> tuple[int, int]:
        key = (c.model_dump_json(), ckpt_layers, offload)
        if key not in estimates:
            estimates[key] = run(c, ckpt_layers, offload)
        return estimates[key]

    def work(c: RunConfig) -> float:
        """Parameters x tokens of the largest step: how busy a step keeps the card (GRAPHS_WORK)."""
        return float(params) * step_tokens(c).train

    cached.work = work
    cached.model_type = getattr(model_config, "model_type", None)  # whether Liger patches it (fit_room.engine_runs)
    return cached


def for_run(cfg: RunConfig, *, distributed: bool) -> tuple[RunConfig, Fit | None]:
    """What the engine runs: ``cfg`` fitted to the card (CUDA, one process), and the fit (None when there is none).

    A numeric ``train.memory_budget`` also caps this process's allocator, so a 16 GiB budget on a larger card
    behaves like a 16 GiB card (an out-of-memory error where that card would have one)."""
    import torch

    from loratui.train.estimate import CUDA_CONTEXT

    if not torch.cuda.is_available():
        return cfg, None
    free, total = torch.cuda.mem_get_info()
    if cfg.train.memory_budget != "auto":
        cap = int(cfg.train.memory_budget * GiB) - CUDA_CONTEXT
        torch.cuda.set_per_process_memory_fraction(max(0.01, min(1.0, cap / total)))
    if distributed or cfg.train.fit == "off":
        return cfg, None  # several processes must agree on one batch: they run as configured
    budget, source = budget_bytes(cfg, free)
    try:
        chosen = plan(cfg, budget, source, estimator=estimator_for(cfg))
    except LoratuiError:
        raise
    except Exception as err:  # noqa: BLE001 - an estimate that can't be made never stops a run
        print(f"memory fit skipped ({type(err).__name__}: {str(err)[:200]}): running as configured", flush=True)
        return cfg, None
    return chosen.apply(cfg), chosen


def limit_checkpointing(model, layers: int | None) -> int:
    """Keep gradient checkpointing on the first ``layers`` decoder layers only (None: all); returns how many are."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    on = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    if layers is not None:
        for m in on[layers:]:
            m.gradient_checkpointing = False
    return min(len(on), layers) if layers is not None else len(on)


def preview(cfg: RunConfig) -> str | None:
    """What the engine's fit would do on this machine's first card now (``loratui estimate``); None without CUDA."""
    import torch

    if not torch.cuda.is_available() or cfg.train.fit == "off":
        return None
    free, _total = torch.cuda.mem_get_info()
    budget, source = budget_bytes(cfg, free)
    return plan(cfg, budget, source, estimator=estimator_for(cfg)).message()
