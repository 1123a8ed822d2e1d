"""The memory fit: the fastest way to run this config inside a memory budget, chosen from the estimate.

A run that fits its budget as written runs as written. One that does not gets the cheapest memory savers that make it
fit, each priced by what it costs in step time (measured on an H200, bench/RESULTS.md):

- gradient checkpointing of the first k decoder layers (k as small as fits: a layer checkpointed keeps its input only
  and is recomputed in the backward pass);
- activation offload (what is saved for backward goes to pinned host memory and comes back ahead of the backward
  pass, on a second CUDA stream; TRL's offloader): with checkpointing, the layers' inputs only (offloaded
  checkpointing, as Unsloth does); alone, everything (slow: picked only when nothing else fits);
- a smaller micro-batch with more gradient accumulation (the same effective batch, the same learning rate);
- the input embeddings in pinned host memory (train.embedding_offload: a LoRA run never trains them; each saver
  above is tried with and without it);
- every layer checkpointed and replayed as CUDA graphs (train.cuda_graphs), at the configured micro-batch or a
  smaller one, its checkpoints offloaded where only that fits.

What the user set explicitly stays: ``gradient_checkpointing: true`` stays on for every layer, ``activation_offload:
off`` and ``embedding_offload: off`` are never turned on, ``fit: off`` runs exactly as written. The budget is
``train.memory_budget`` (GiB) or, with ``auto``, what is free on the card at launch. Torch side (the estimate builds
the model on the meta device).
"""

from __future__ import annotations

import dataclasses
import math

from loratui.core.config import RunConfig
from loratui.train.fit_prices import (  # noqa: F401 - the calibration (re-exported; tests set their own prices)
    AUTO_SHARE, CKPT_ALL_COST, CKPT_OFFLOAD_COST, EIGHT_BIT, EIGHT_BIT_COST, EMBEDDING_COST, FASTER, GRAPHS_CKPT_COST,
    GRAPHS_CKPT_COST_QUANTIZED, GRAPHS_CKPT_MEMORY, GRAPHS_CKPT_OFFLOAD_COST, GRAPHS_CKPT_TEXT, GRAPHS_WORK,
    GRAPHS_HALF_BATCH_COST, GRAPHS_MEMORY, GRAPHS_MEMORY_QUANTIZED, HALF_BATCH_COST, OFFLOAD_COST, GiB,
)
from loratui.train.fit_result import Fit, budget_bytes, describe, graphs_factor  # noqa: F401 - re-exported
from loratui.train.fit_room import graphs_ckpt_cost, with_checkpointed_graphs, with_room, with_wide_loss_chunks


def plan(cfg: RunConfig, budget: int, source: str = "train.memory_budget", *, estimator) -> Fit:
    """The cheapest set of savers under which the estimate of ``cfg`` is at most ``budget`` bytes.

    ``estimator(cfg, ckpt_layers, offload) -> (bytes, layers)`` is the real estimate (loratui.train.fit_run's
    ``estimator_for``: meta model, sampled data) or a test's own; its ``work(cfg)``, where it has one, says how busy
    a step keeps the card."""
    t = cfg.train
    needed, layers = estimator(cfg, None, t.activation_offload == "on")
    base = Fit(budget=budget, source=source, needed=needed, estimate=needed, fits=needed <= budget,
               batch_size=t.batch_size, grad_accum=t.grad_accum, checkpointing=t.gradient_checkpointing,
               layers=layers, offload=t.activation_offload == "on")
    if t.fit == "off":
        return base
    if base.fits:
        return with_wide_loss_chunks(cfg, with_room(cfg, base, estimator), estimator)
    best, leanest = _search(cfg, base, estimator)
    for trial, extra, marks in _variants(cfg, estimator, needed):  # the same search with more savers, each at its cost
        best2, leanest2 = _search(trial, base, estimator, extra=extra, marks=marks)
        if best2 is not None and (best is None or best2.cost < best.cost):
            best = best2
        if leanest2 is not None and (leanest is None or leanest2.estimate < leanest.estimate):
            leanest = leanest2
    chosen = best or leanest or base
    chosen.changes = describe(cfg, chosen) + ([GRAPHS_CKPT_TEXT] if chosen.graphs else [])
    return chosen


#: the savers that change the config itself, tried as variants of the whole search: train key -> (the value the
#: fit sets, its extra step time, what the Fit records)
CONFIG_SAVERS = {
    "embedding_offload": ("on", EMBEDDING_COST, True),
    "optimizer": (EIGHT_BIT, EIGHT_BIT_COST, EIGHT_BIT),
}


def _variants(cfg: RunConfig, estimator, needed: int):
    """(``cfg`` with more savers, their extra step time, what the Fit records) for CONFIG_SAVERS: the input
    embeddings in host memory (train.embedding_offload left on auto) and 8-bit AdamW (train.optimizer left on auto),
    each where it is allowed and the estimate falls, and both together."""
    from loratui.train import speed

    def with_savers(keys):
        trial = cfg.model_copy(deep=True)
        for key in keys:
            setattr(trial.train, key, CONFIG_SAVERS[key][0])
        return trial

    offload = cfg.train.activation_offload == "on"
    single = []
    for key in CONFIG_SAVERS:
        if getattr(cfg.train, key) != "auto" or key == "optimizer" and not _has_bitsandbytes():
            continue
        trial = with_savers([key])
        try:
            if key == "embedding_offload":
                speed.embedding_offload(trial, cuda=True)
        except Exception:  # noqa: BLE001 - not a run that may move them (full fine-tuning, several cards)
            continue
        if estimator(trial, None, offload)[0] < needed:
            single.append(key)
    for combo in [[key] for key in single] + ([single] if len(single) > 1 else []):
        extra = math.prod(1 + CONFIG_SAVERS[key][1] for key in combo) - 1
        yield with_savers(combo), extra, {key: CONFIG_SAVERS[key][2] for key in combo}


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _search(cfg: RunConfig, base: Fit, estimator, extra: float = 0.0,
            marks: dict | None = None) -> tuple[Fit | None, Fit | None]:
    """The cheapest fitting set of savers for ``cfg`` (each costing ``extra`` more; ``marks``: the Fit fields of the
    savers ``_variants`` put in ``cfg``) and the leanest of all tried: checkpointing, offload and graphs at the
    configured batch, then at halved micro-batches while that may pay."""
    marks = marks or {}
    t, budget, source, needed, layers = cfg.train, base.budget, base.source, base.needed, base.layers
    work = getattr(estimator, "work", None)
    best: Fit | None = None
    leanest: Fit | None = None
    for halvings in range(0, 1 + int(math.log2(max(t.batch_size, 1)))):
        micro = max(1, t.batch_size >> halvings)
        accum = t.grad_accum * math.ceil(t.batch_size / micro)
        trial = cfg.model_copy(deep=True)
        trial.train.batch_size, trial.train.grad_accum = micro, accum
        batch_cost = (1 + HALF_BATCH_COST) ** halvings - 1
        graphs_batch_cost = (1 + GRAPHS_HALF_BATCH_COST) ** halvings - 1
        for option in _options(trial, estimator, layers, budget):
            total, ckpt, k, offload, saver_cost = option
            cost = (1 + batch_cost) * (1 + saver_cost) * (1 + extra) - 1
            fit = Fit(budget=budget, source=source, needed=needed, estimate=total, fits=total <= budget,
                      batch_size=micro, grad_accum=accum, checkpointing=ckpt, ckpt_layers=k, layers=layers,
                      offload=offload, cost=cost, **marks)
            if fit.fits and (best is None or cost < best.cost):
                best = fit
            if leanest is None or total < leanest.estimate:
                leanest = fit
        # checkpointed graphs at this micro-batch: faster than eager checkpointing at the same one (8B QLoRA batch 4:
        # 5,010 vs 1,496 tokens/s, one call), the more so the smaller the step; not on a busy card (long steps)
        graphed = None if work is not None and work(trial) > GRAPHS_WORK else \
            with_checkpointed_graphs(trial, base, estimator)
        if graphed is not None:
            graphed.cost = (1 + graphs_batch_cost) * (1 + graphed.cost) * (1 + extra) - 1
            graphed = dataclasses.replace(graphed, **marks)
            if best is None or graphed.cost < best.cost:
                best = graphed
        cheapest = min((1 + HALF_BATCH_COST) ** (halvings + 1),
                       (1 + GRAPHS_HALF_BATCH_COST) ** (halvings + 1) * (1 + graphs_ckpt_cost(cfg))) - 1
        if best is not None and cheapest >= best.cost:
            break  # a smaller micro-batch would cost more than what fits already
    return best, leanest


def _options(cfg: RunConfig, estimator, layers: int, budget: int):
    """(estimate, checkpointing, first k layers, offload, extra step time) for each way to save at this batch."""
    t = cfg.train
    offload_allowed = t.activation_offload != "off"
    if t.gradient_checkpointing:  # the user's: every layer, nothing to choose but the batch and the offload
        total, _ = estimator(cfg, None, t.activation_offload == "on")
        yield total, True, None, t.activation_offload == "on", CKPT_ALL_COST
        if offload_allowed and t.activation_offload != "on":
            total, _ = estimator(cfg, None, True)
            yield total, True, None, True, CKPT_ALL_COST + CKPT_OFFLOAD_COST
        return
    none, _ = estimator(cfg, None, t.activation_offload == "on")
    yield none, False, None, t.activation_offload == "on", OFFLOAD_COST if t.activation_offload == "on" else 0.0
    if offload_allowed and t.activation_offload != "on":
        total, _ = estimator(cfg, None, True)
        yield total, False, None, True, OFFLOAD_COST
    # the fewest layers checkpointed that fit: the estimate falls by the same amount for each layer added
    full, _ = estimator(cfg, layers, False)
    yield full, True, None, False, CKPT_ALL_COST
    if offload_allowed:  # offloaded checkpointing: the layer inputs wait in host memory
        total, _ = estimator(cfg, layers, True)
        yield total, True, None, True, CKPT_ALL_COST + CKPT_OFFLOAD_COST
    if layers < 2 or full > budget:
        return
    one, _ = estimator(cfg, 1, False)
    step = (one - full) / (layers - 1)
    k = layers if step <= 0 else max(1, min(layers, 1 + math.ceil((one - budget) / step)))
    while k < layers:
        total, _ = estimator(cfg, k, False)
        if total <= budget:
            yield total, True, k, False, CKPT_ALL_COST * k / layers
            return
        k += 1
