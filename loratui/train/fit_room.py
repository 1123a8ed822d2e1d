"""The memory fit's levers for a run with room to spare (loratui.train.fit): a quantized base's faster levers, CUDA
graphs, and every layer checkpointed with graphs where that is faster than running as written."""

from __future__ import annotations

import dataclasses

from loratui.core.config import RunConfig
from loratui.train.fit_prices import (
    FASTER, GRAPHS_CKPT_COST, GRAPHS_CKPT_COST_QUANTIZED, GRAPHS_CKPT_MEMORY, GRAPHS_CKPT_OFFLOAD_COST, GRAPHS_CKPT_TEXT,
    GRAPHS_WORK,
)
from loratui.train.fit_result import Fit, describe, graphs_memory


def engine_runs(candidate: RunConfig, estimator=None) -> bool:
    """Whether the engine on a CUDA card takes ``candidate`` (its speed levers' own checks, loratui.train.speed):
    the fit turns a lever on only where it can run. The model's type (``estimator.model_type``, where the estimator
    has one) decides whether Liger patches it, as in the engine: without it, Liger read off and the fit never chose
    wide loss chunks on a GPU (rounds 13-15)."""
    from loratui.train import speed

    try:
        speed.resolve(candidate, cuda=True, model_type=getattr(estimator, "model_type", None))
    except Exception:  # noqa: BLE001 - the engine would refuse it with a ConfigError
        return False
    return True


def with_room(cfg: RunConfig, base: Fit, estimator) -> Fit:
    """A run that fits as configured: the speed levers there is room for (a quantized base's faster levers, graphs),
    or every layer checkpointed with graphs where that is faster than running as written."""
    fit = with_graphs(cfg, faster(cfg, dataclasses.replace(base), estimator), estimator)
    if fit.graphs:
        return fit
    work = getattr(estimator, "work", None)  # graphs beat running as written where steps are small
    if cfg.train.gradient_checkpointing or (work is not None and work(cfg) <= GRAPHS_WORK):
        return with_checkpointed_graphs(cfg, base, estimator) or fit
    return fit


def with_wide_loss_chunks(cfg: RunConfig, fit: Fit, estimator) -> Fit:
    """With room left once the rest is chosen, Liger's fused cross-entropy in wider chunks (train.wide_loss_chunks
    left on auto; loratui.train.speed.loss_chunk): 1B LoRA +7% tokens/s for 0.2 GiB (round 12). Last, so it never
    takes the room graphs would use; the estimate prices its logits chunk."""
    if cfg.train.wide_loss_chunks != "auto":
        return fit
    chosen = fit.apply(cfg)
    wide = chosen.model_copy(deep=True)
    wide.train.wide_loss_chunks = "on"
    if not engine_runs(wide, estimator):  # no fused cross-entropy in the chosen run (Liger off for speed, dpo, ...)
        return fit
    offload = chosen.train.activation_offload == "on"
    layers = fit.ckpt_layers if fit.checkpointing else None
    extra = estimator(wide, layers, offload)[0] - estimator(chosen, layers, offload)[0]
    if extra > 0 and fit.estimate + extra <= fit.budget:
        fit.wide_loss_chunks, fit.estimate = True, fit.estimate + extra
    return fit


def faster(cfg: RunConfig, base: Fit, estimator) -> Fit:
    """With room to spare, a 4-bit or 8-bit base turns off the levers that buy memory with speed (those left on auto),
    the most valuable first, as long as the run still fits."""
    if not cfg.quantized:
        return base
    off: list[str] = []
    trial = cfg
    for key in FASTER:
        if getattr(cfg.train, key) != "auto":
            continue
        candidate = trial.model_copy(deep=True)
        setattr(candidate.train, key, "off")
        total, _ = estimator(candidate, None, cfg.train.activation_offload == "on")
        if total <= base.budget:
            trial, off, base.estimate = candidate, [*off, key], total
    base.faster = off
    base.changes = [f"{FASTER[k][0]} off" for k in off]
    return base


def with_graphs(cfg: RunConfig, fit: Fit, estimator=None) -> Fit:
    """With room for them (graphs_memory x the estimate), CUDA graphs on where the run can use them (left on auto;
    loratui.train.speed.cuda_graphs says where) and a step is small enough to wait on the host (GRAPHS_WORK): 8B
    QLoRA shape 3.1x tokens/s once every step size is captured, 1B LoRA 1.8x (bench/RESULTS.md, round 7); 8B bf16
    LoRA on 16 rows 0.85x (round 10)."""
    if cfg.train.cuda_graphs != "auto" or fit.checkpointing or fit.estimate * graphs_memory(cfg) > fit.budget:
        return fit
    candidate = fit.apply(cfg)
    candidate.train.cuda_graphs = "on"
    if not engine_runs(candidate, estimator):  # not a run graphs can replay (no GPU, checkpointing, unpacked, ...)
        return fit
    work = getattr(estimator, "work", None)
    if work is not None and work(cfg) > GRAPHS_WORK:
        fit.note = ("CUDA graphs left off: steps this large keep the card busy and the graphs would pad them "
                    "(train.cuda_graphs: on forces them)")
        return fit
    fit.graphs, fit.estimate = True, int(fit.estimate * graphs_memory(cfg))
    fit.changes = [*fit.changes, "CUDA graphs on"]
    return fit


def graphs_ckpt_cost(cfg: RunConfig) -> float:
    return GRAPHS_CKPT_COST_QUANTIZED if cfg.quantized else GRAPHS_CKPT_COST


def with_checkpointed_graphs(cfg: RunConfig, fit: Fit, estimator) -> Fit | None:
    """Every layer checkpointed and replayed as CUDA graphs at the configured batch (train.cuda_graphs left on
    auto), with the checkpoints in host memory where only that fits (train.activation_offload left on auto); None
    where neither fits or graphs cannot run (loratui.train.speed.cuda_graphs says where)."""
    t = cfg.train
    if t.cuda_graphs != "auto":
        return None
    candidate = cfg.model_copy(deep=True)
    candidate.train.gradient_checkpointing, candidate.train.cuda_graphs = True, "on"
    if not engine_runs(candidate, estimator):  # not a run graphs can replay (no GPU, unpacked, 2 cards, ...)
        return None
    user = t.activation_offload == "on"
    for offload in [user] if user or t.activation_offload == "off" else [False, True]:
        total, layers = estimator(cfg, None if t.gradient_checkpointing else fit.layers or None, offload)
        total = int(total * GRAPHS_CKPT_MEMORY)
        if total <= fit.budget:
            cost = (1 + graphs_ckpt_cost(cfg)) * (1 + (GRAPHS_CKPT_OFFLOAD_COST if offload and not user else 0)) - 1
            out = Fit(budget=fit.budget, source=fit.source, needed=fit.needed, estimate=total, fits=True,
                      batch_size=t.batch_size, grad_accum=t.grad_accum, checkpointing=True, ckpt_layers=None,
                      layers=layers, offload=offload, cost=cost, graphs=True)
            out.changes = [*describe(cfg, out), GRAPHS_CKPT_TEXT]
            return out
    return None
