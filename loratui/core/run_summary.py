"""What every view shows about a run: the :class:`RunSummary` that the one fold (:mod:`loratui.core.fold`) computes.

Light module (the protocol's pydantic types only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Optional

from loratui.core.protocol import RunState, state_style, to_json_value


@dataclass
class RunSummary:
    """Everything a view shows about a run, computed once by :class:`RunFold`."""

    name: str = ""
    path: Optional[Path] = None
    state: RunState = RunState.WAITING
    problem: Optional[str] = None
    """Why (part of) the run could not be read: skipped event lines, a broken status.json."""
    pid: Optional[int] = None
    lifecycle: Optional[str] = None
    """Kind of the newest started/resumed/finished/stopped/failed event."""
    model: str = ""
    method: str = ""
    objective: str = ""  # sft, dpo, orpo, kto (empty: a run from before the field, or no started event yet)
    task: str = ""
    device: str = ""
    precision: str = ""
    trainable_params: Optional[int] = None
    total_params: Optional[int] = None
    train_examples: Optional[int] = None
    eval_examples: Optional[int] = None
    phase: str = ""
    step: int = 0
    max_steps: int = 0
    epoch: Optional[float] = None
    epochs: Optional[float] = None
    loss: Optional[float] = None
    """The newest logged training loss."""
    loss_step: Optional[int] = None
    """The step that loss was logged at (steps go on between logged ones: ``train.logging_steps``)."""
    lr: Optional[float] = None
    grad_norm: Optional[float] = None
    tokens_per_s: Optional[float] = None
    """Training throughput: tokens trained over the seconds spent training them, every engine process's part
    (each part's first logged step, its warm-up, left out); the newest logged rate for events without counts."""
    elapsed: Optional[float] = None
    """Active time: the seconds the engine processes worked, summed over every part (the pause between a stop and
    a resume left out), ticking while it runs. What every view calls 'time'."""
    wall: Optional[float] = None
    """Wall time: from the run's first event to its last (now, while it runs), the pauses between parts included."""
    eta: Optional[float] = None
    """Seconds left while it runs, else None."""
    stalled_for: Optional[float] = None
    """A stalled run: seconds since its engine last said anything."""
    alerts: list = field(default_factory=list)
    """The run's alert events (spike, plateau, early_stop), oldest first: {step, alert, message}."""
    best_step: Optional[int] = None
    """Early stopping: the step whose weights the adapter holds."""
    stall_after: Optional[float] = None
    """A running run: the silence after which it counts as stalled (seconds)."""
    eval_metrics: dict = field(default_factory=dict)
    """The newest evaluation's metrics (eval_loss, perplexity, accuracy, f1, ...)."""
    eval_step: Optional[int] = None
    rewards: dict = field(default_factory=dict)
    """A preference run's newest logged step: TRL's rewards/chosen, rejected, margins, accuracies."""
    best_eval_loss: Optional[float] = None
    best_eval_step: Optional[int] = None
    best_accuracy: Optional[float] = None
    final_eval: dict = field(default_factory=dict)
    """A finished run's final metrics (the last evaluation's when the engine did not evaluate again)."""
    train_loss: Optional[float] = None
    """Mean of the logged training losses of the steps that count (steps redone after a resume replace the old)."""
    memory: Optional[dict] = None
    checkpoint: Optional[str] = None
    adapter: Optional[str] = None
    failure: Optional[dict] = None
    """The failed event: error, message, hint, field."""
    world_size: int = 1
    distributed: str = ""
    """none | ddp | fsdp (the started event's; "" from an engine that did not say)."""
    gpus: list = field(default_factory=list)
    """The started event's cards: {index, name, memory_total}."""
    effective_batch: Optional[int] = None
    error: Optional[str] = None
    """One line for a failed run."""
    resumes: int = 0
    started: Optional[float] = None
    ended: Optional[float] = None
    events: int = 0
    skipped: int = 0

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    @property
    def eval_loss(self) -> Optional[float]:
        return self.eval_metrics.get("eval_loss")

    @property
    def accuracy(self) -> Optional[float]:
        return self.eval_metrics.get("accuracy")

    @property
    def perplexity(self) -> Optional[float]:
        return self.eval_metrics.get("perplexity")

    @property
    def last_loss(self) -> Optional[float]:  # the name the runs list used
        return self.loss

    @property
    def runtime_s(self) -> Optional[float]:
        return self.elapsed

    @property
    def state_style(self) -> str:
        return state_style(self.state)

    @property
    def progress_text(self) -> str:
        return f"{self.step}/{self.max_steps}" if self.max_steps else (str(self.step) if self.step else "-")

    @property
    def method_text(self) -> str:
        """The method, and the objective when it is a preference one ('qlora·dpo'); '-' when unknown."""
        if not self.method:
            return "-"
        return self.method if self.objective in ("", "sft") else f"{self.method}·{self.objective}"

    @property
    def started_text(self) -> str:
        return datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M") if self.started else "-"

    def to_json(self) -> dict:
        return to_json_value({
            "name": self.name, "state": self.state.value, "model": self.model, "method": self.method,
            "objective": self.objective or None,
            "step": self.step, "max_steps": self.max_steps, "progress": round(self.progress, 4),
            "elapsed_s": self.elapsed, "wall_s": self.wall, "eta_s": self.eta, "tokens_per_s": self.tokens_per_s,
            "best_eval_loss": self.best_eval_loss, "eval": self.eval_metrics or None,
            "final_eval": self.final_eval or None, "train_loss": self.train_loss, "error": self.error,
            "stalled_for_s": self.stalled_for,
            "problem": self.problem,
        })
