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
from dataclasses import dataclass, field

from loratui.core.config import RunConfig
from loratui.train.fit_prices import (  # noqa: F401 - the calibration (re-exported; tests set their own prices)
    AUTO_SHARE, CKPT_ALL_COST, CKPT_OFFLOAD_COST, EIGHT_BIT, EIGHT_BIT_COST, EMBEDDING_COST, FASTER, GRAPHS_CKPT_COST,
    GRAPHS_CKPT_COST_QUANTIZED, GRAPHS_CKPT_MEMORY, GRAPHS_CKPT_OFFLOAD_COST, GRAPHS_CKPT_TEXT, GRAPHS_WORK,
    GRAPHS_HALF_BATCH_COST, GRAPHS_MEMORY, HALF_BATCH_COST, OFFLOAD_COST, GiB,
)


@dataclass
class Fit:
    budget: int  # bytes the run may use (NVML's view)
    source: str  # where the budget came from
    needed: int  # the estimate as written
    estimate: int  # the estimate of what was chosen
    fits: bool
    batch_size: int
    grad_accum: int
    checkpointing: bool = False
    ckpt_layers: int | None = None  # with checkpointing: the first k layers (None: all)
    layers: int = 0
    offload: bool = False
    cost: float = 0.0  # the chosen savers' estimated extra step time
    changes: list[str] = field(default_factory=list)
    faster: list[str] = field(default_factory=list)  # memory-for-speed levers switched off because there is room
    graphs: bool = False  # CUDA graphs switched on because there is room (train.cuda_graphs: auto)
    embedding_offload: bool = False  # the input embeddings moved to host memory (train.embedding_offload: auto)
    optimizer: str | None = None  # the optimizer the fit chose (train.optimizer: auto): 8-bit AdamW where short
    note: str | None = None  # why a speed lever left on auto stays off though there is room (said with the verdict)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def message(self) -> str:
        need, have = self.needed / GiB, self.budget / GiB
        if self.graphs and self.checkpointing and self.needed <= self.budget:
            return (f"memory: {have:.1f} GiB is the budget ({self.source}); {', '.join(self.changes)} for speed "
                    f"(faster than running as configured without graphs; about {self.estimate / GiB:.1f} GiB "
                    f"instead of {need:.1f}; train.fit: off runs as configured)")
        if self.faster or (self.graphs and not self.checkpointing):
            parts = [" and ".join(FASTER[k][0] for k in self.faster) + " off"] if self.faster else []
            what = " and ".join([*parts, *(["CUDA graphs on"] * self.graphs)])
            return (f"memory: {have:.1f} GiB is the budget ({self.source}) and there is room: {what} for speed "
                    f"(about {self.estimate / GiB:.1f} GiB instead of {need:.1f}; train.fit: off runs as configured)")
        if not self.changed:
            if self.fits:
                note = f"; {self.note}" if self.note else ""
                return (f"memory: needs about {need:.1f} GiB of {have:.1f} GiB ({self.source}): runs as "
                        f"configured{note}")
            return (f"memory: needs about {need:.1f} GiB but {have:.1f} GiB is the budget ({self.source}) and no "
                    "saver is left to add: it may run out of memory (lower data.max_length or train.batch_size)")
        what = ", ".join(self.changes)
        verdict = "fits" if self.fits else "still over the budget: it may run out of memory"
        return (f"memory: as configured it needs about {need:.1f} GiB, {have:.1f} GiB is the budget ({self.source}); "
                f"using {what} (about {self.estimate / GiB:.1f} GiB, {verdict}; {_step_time(self.cost)}; "
                "train.fit: off runs as configured)")

    def as_event(self) -> dict:
        return {"budget_gib": round(self.budget / GiB, 2), "source": self.source,
                "needed_gib": round(self.needed / GiB, 2), "estimate_gib": round(self.estimate / GiB, 2),
                "fits": self.fits, "changes": self.changes, "batch_size": self.batch_size,
                "grad_accum": self.grad_accum, "checkpointing": self.checkpointing, "ckpt_layers": self.ckpt_layers,
                "offload": self.offload, "cost": round(self.cost, 3), "faster": self.faster, "graphs": self.graphs,
                "embedding_offload": self.embedding_offload, "optimizer": self.optimizer}

    def apply(self, cfg: RunConfig) -> RunConfig:
        """A copy of ``cfg`` with the chosen savers (the run folder's config.yaml keeps what the user wrote)."""
        out = cfg.model_copy(deep=True)
        out.train.batch_size, out.train.grad_accum = self.batch_size, self.grad_accum
        out.train.gradient_checkpointing = self.checkpointing
        if self.offload:
            out.train.activation_offload = "on"
        for key in self.faster:
            setattr(out.train, key, "off")
        if self.graphs:
            out.train.cuda_graphs = "on"
        if self.embedding_offload:
            out.train.embedding_offload = "on"
        if self.optimizer:
            out.train.optimizer = self.optimizer
        return out


def graphs_factor(cfg: RunConfig) -> float:
    """What CUDA graphs the user turned on (train.cuda_graphs: on) multiply the estimate by: the graphs' pool beside
    the checkpoints, or every activation kept per step size without checkpointing (auto is priced where the fit
    turns them on)."""
    if cfg.train.cuda_graphs != "on":
        return 1.0
    return GRAPHS_CKPT_MEMORY if cfg.train.gradient_checkpointing else GRAPHS_MEMORY


def _step_time(cost: float) -> str:
    return f"about +{100 * cost:.0f}% step time" if cost >= 0 else f"about {-100 * cost:.0f}% less step time"


def budget_bytes(cfg: RunConfig, free: int) -> tuple[int, str]:
    """The run's budget: train.memory_budget, or (auto) a share of what is free on the card now."""
    b = cfg.train.memory_budget
    if b != "auto":
        return int(b * GiB), "train.memory_budget"
    return int(free * AUTO_SHARE), f"{AUTO_SHARE:.0%} of the {free / GiB:.1f} GiB free on the card"


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
    work = getattr(estimator, "work", None)  # graphs beat running as written where steps are small
    if base.fits:
        fit = _with_graphs(cfg, _faster(cfg, dataclasses.replace(base), estimator), work)
        if fit.graphs:
            return fit
        if t.gradient_checkpointing or (work is not None and work(cfg) <= GRAPHS_WORK):
            return _with_checkpointed_graphs(cfg, base, estimator) or fit
        return fit
    best, leanest = _search(cfg, base, estimator)
    for trial, extra, marks in _variants(cfg, estimator, needed):  # the same search with more savers, each at its cost
        best2, leanest2 = _search(trial, base, estimator, extra=extra, marks=marks)
        if best2 is not None and (best is None or best2.cost < best.cost):
            best = best2
        if leanest2 is not None and (leanest is None or leanest2.estimate < leanest.estimate):
            leanest = leanest2
    chosen = best or leanest or base
    chosen.changes = _describe(cfg, chosen) + ([GRAPHS_CKPT_TEXT] if chosen.graphs else [])
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
            _with_checkpointed_graphs(trial, base, estimator)
        if graphed is not None:
            graphed.cost = (1 + graphs_batch_cost) * (1 + graphed.cost) * (1 + extra) - 1
            graphed = dataclasses.replace(graphed, **marks)
            if best is None or graphed.cost < best.cost:
                best = graphed
        cheapest = min((1 + HALF_BATCH_COST) ** (halvings + 1),
                       (1 + GRAPHS_HALF_BATCH_COST) ** (halvings + 1) * (1 + _graphs_ckpt_cost(cfg))) - 1
        if best is not None and cheapest >= best.cost:
            break  # a smaller micro-batch would cost more than what fits already
    return best, leanest


def _faster(cfg: RunConfig, base: Fit, estimator) -> Fit:
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


def _with_graphs(cfg: RunConfig, fit: Fit, work=None) -> Fit:
    """With room for them (GRAPHS_MEMORY x the estimate), CUDA graphs on where the run can use them (left on auto;
    loratui.train.speed.cuda_graphs says where) and a step is small enough to wait on the host (GRAPHS_WORK): 8B
    QLoRA shape 3.1x tokens/s once every step size is captured, 1B LoRA 1.8x (bench/RESULTS.md, round 7); 8B bf16
    LoRA on 16 rows 0.85x (round 10)."""
    from loratui.train import speed

    if cfg.train.cuda_graphs != "auto" or fit.checkpointing or fit.estimate * GRAPHS_MEMORY > fit.budget:
        return fit
    candidate = fit.apply(cfg)
    candidate.train.cuda_graphs = "on"
    try:
        speed.resolve(candidate, cuda=True)
    except Exception:  # noqa: BLE001 - not a run graphs can replay (no GPU, checkpointing, unpacked, 2 cards, ...)
        return fit
    if work is not None and work(cfg) > GRAPHS_WORK:
        fit.note = ("CUDA graphs left off: steps this large keep the card busy and the graphs would pad them "
                    "(train.cuda_graphs: on forces them)")
        return fit
    fit.graphs, fit.estimate = True, int(fit.estimate * GRAPHS_MEMORY)
    fit.changes = [*fit.changes, "CUDA graphs on"]
    return fit


def _graphs_ckpt_cost(cfg: RunConfig) -> float:
    return GRAPHS_CKPT_COST_QUANTIZED if cfg.quantized else GRAPHS_CKPT_COST


def _with_checkpointed_graphs(cfg: RunConfig, fit: Fit, estimator) -> Fit | None:
    """Every layer checkpointed and replayed as CUDA graphs at the configured batch (train.cuda_graphs left on
    auto), with the checkpoints in host memory where only that fits (train.activation_offload left on auto); None
    where neither fits or graphs cannot run (loratui.train.speed.cuda_graphs says where)."""
    from loratui.train import speed

    t = cfg.train
    if t.cuda_graphs != "auto":
        return None
    candidate = cfg.model_copy(deep=True)
    candidate.train.gradient_checkpointing, candidate.train.cuda_graphs = True, "on"
    try:
        speed.resolve(candidate, cuda=True)
    except Exception:  # noqa: BLE001 - not a run graphs can replay (no GPU, unpacked, 2 cards, ...)
        return None
    user = t.activation_offload == "on"
    for offload in [user] if user or t.activation_offload == "off" else [False, True]:
        total, layers = estimator(cfg, None if t.gradient_checkpointing else fit.layers or None, offload)
        total = int(total * GRAPHS_CKPT_MEMORY)
        if total <= fit.budget:
            cost = (1 + _graphs_ckpt_cost(cfg)) * (1 + (GRAPHS_CKPT_OFFLOAD_COST if offload and not user else 0)) - 1
            out = Fit(budget=fit.budget, source=fit.source, needed=fit.needed, estimate=total, fits=True,
                      batch_size=t.batch_size, grad_accum=t.grad_accum, checkpointing=True, ckpt_layers=None,
                      layers=layers, offload=offload, cost=cost, graphs=True)
            out.changes = [*_describe(cfg, out), GRAPHS_CKPT_TEXT]
            return out
    return None


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


def _describe(cfg: RunConfig, fit: Fit) -> list[str]:
    t, out = cfg.train, []
    if fit.batch_size != t.batch_size:
        out.append(f"micro-batch {fit.batch_size} x {fit.grad_accum} accumulation (was {t.batch_size} x "
                   f"{t.grad_accum}: the same {t.batch_size * t.grad_accum} examples a step)")
    if fit.checkpointing and not t.gradient_checkpointing:
        out.append(f"gradient checkpointing on {fit.ckpt_layers} of {fit.layers} layers" if fit.ckpt_layers
                   else f"gradient checkpointing on all {fit.layers} layers")
    if fit.offload and t.activation_offload != "on":
        out.append("activation offload to host memory")
    if fit.embedding_offload:
        out.append("input embeddings in host memory")
    if fit.optimizer:
        out.append("8-bit AdamW (its states in 8 bits)")
    return out
