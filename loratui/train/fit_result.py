"""What the memory fit chose (loratui.train.fit): the Fit itself, what it says and records, and the budget."""

from __future__ import annotations

from dataclasses import dataclass, field

from loratui.core.config import RunConfig
from loratui.train.fit_prices import (
    AUTO_SHARE, FASTER, GRAPHS_CKPT_MEMORY, GRAPHS_MEMORY, GRAPHS_MEMORY_QUANTIZED, GiB,
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
    wide_loss_chunks: bool = False  # Liger's cross-entropy in wider chunks because there is room (auto)

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    @property
    def worth_saying(self) -> bool:
        """Whether the engine's log says the fit's verdict: it changed the run, turned a speed lever on (wide loss
        chunks alone changed nothing the user set, and the 8B LoRA log said nothing of them), has a note, or the run
        may not fit. A run as configured that fits goes unsaid."""
        return self.changed or self.wide_loss_chunks or not self.fits or bool(self.note)

    def message(self) -> str:
        need, have = self.needed / GiB, self.budget / GiB
        wide = ["wide loss chunks"] if self.wide_loss_chunks else []
        if self.graphs and self.checkpointing and self.needed <= self.budget:
            return (f"memory: {have:.1f} GiB is the budget ({self.source}); {', '.join(self.changes + wide)} for speed "
                    f"(faster than running as configured without graphs; about {self.estimate / GiB:.1f} GiB "
                    f"instead of {need:.1f}; train.fit: off runs as configured)")
        if self.faster or (self.graphs and not self.checkpointing) or wide:
            parts = [" and ".join(FASTER[k][0] for k in self.faster) + " off"] if self.faster else []
            what = " and ".join([*parts, *(["CUDA graphs on"] * self.graphs), *wide])
            note = f"; {self.note}" if self.note else ""
            return (f"memory: {have:.1f} GiB is the budget ({self.source}) and there is room: {what} for speed "
                    f"(about {self.estimate / GiB:.1f} GiB instead of {need:.1f}; train.fit: off runs as configured)"
                    f"{note}")
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
                "embedding_offload": self.embedding_offload, "optimizer": self.optimizer,
                "wide_loss_chunks": self.wide_loss_chunks}

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
        if self.wide_loss_chunks:
            out.train.wide_loss_chunks = "on"
        return out


def graphs_factor(cfg: RunConfig) -> float:
    """What CUDA graphs the user turned on (train.cuda_graphs: on) multiply the estimate by: the graphs' pool beside
    the checkpoints, or every activation kept per step size without checkpointing (auto is priced where the fit
    turns them on)."""
    if cfg.train.cuda_graphs != "on":
        return 1.0
    return GRAPHS_CKPT_MEMORY if cfg.train.gradient_checkpointing else graphs_memory(cfg)


def graphs_memory(cfg: RunConfig) -> float:
    """CUDA graphs without checkpointing: times the estimate without them (a 4-bit or 8-bit base keeps each layer's
    dequantized weights in the graphs' memory as well)."""
    return GRAPHS_MEMORY_QUANTIZED if cfg.quantized else GRAPHS_MEMORY


def _step_time(cost: float) -> str:
    return f"about +{100 * cost:.0f}% step time" if cost >= 0 else f"about {-100 * cost:.0f}% less step time"


def budget_bytes(cfg: RunConfig, free: int) -> tuple[int, str]:
    """The run's budget: train.memory_budget, or (auto) a share of what is free on the card now."""
    b = cfg.train.memory_budget
    if b != "auto":
        return int(b * GiB), "train.memory_budget"
    return int(free * AUTO_SHARE), f"{AUTO_SHARE:.0%} of the {free / GiB:.1f} GiB free on the card"


def describe(cfg: RunConfig, fit: Fit) -> list[str]:
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
