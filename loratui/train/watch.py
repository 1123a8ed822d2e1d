"""The run watching itself: loss spikes, evaluations that stop improving (a plateau), and early stopping.

Plain Python on numbers the Trainer already logged (host floats at logging and evaluation steps): nothing here
touches the GPU or adds a sync to the step. The engine's callback feeds it and turns verdicts into ``alert`` events.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

#: a logged loss this many times the median of the recent ones is a spike
SPIKE_FACTOR = 3.0
SPIKE_WINDOW = 10
#: evaluations without improvement before a plateau alert when early stopping is not set
PLATEAU_EVALS = 5


@dataclass
class SpikeWatch:
    factor: float = SPIKE_FACTOR
    window: int = SPIKE_WINDOW
    recent: list[float] = field(default_factory=list)

    def observe(self, step: int, loss: float | None) -> str | None:
        """A message when ``loss`` jumps far above its recent level, else None."""
        if loss is None or not math.isfinite(loss):
            return None
        spike = None
        if len(self.recent) >= max(3, self.window // 2):
            level = statistics.median(self.recent)
            if level > 0 and loss > self.factor * level:
                spike = (f"loss spike at step {step}: {loss:.4g}, {loss / level:.1f}x its recent level "
                         f"({level:.4g}, the median of the last {len(self.recent)} logged steps)")
        self.recent = (self.recent + [loss])[-self.window:]
        return spike


@dataclass
class EarlyStop:
    """Tracks the evaluation metric; ``observe`` says improved / waiting / plateau / stop."""

    metric: str  # eval_loss, accuracy, f1, ...
    patience: int | None  # None: never stop, only say plateau after PLATEAU_EVALS
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    since: int = 0  # evaluations since the best
    alerted: bool = False

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "eval_loss" and "loss" not in self.metric

    def observe(self, step: int, metrics: dict) -> str:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return "waiting"
        better = self.best is None or (value > self.best + self.min_delta if self.higher_is_better
                                       else value < self.best - self.min_delta)
        if better:
            self.best, self.best_step, self.since, self.alerted = value, step, 0, False
            return "improved"
        self.since += 1
        if self.patience is not None and self.since >= self.patience:
            return "stop"
        if self.patience is None and self.since >= PLATEAU_EVALS and not self.alerted:
            self.alerted = True
            return "plateau"
        return "waiting"

    def message(self) -> str:
        return (f"{self.metric} has not improved for {self.since} evaluations (best {self.best:.4g} at step "
                f"{self.best_step})")


def metric_for(task: str, configured: str) -> str:
    """The metric early stopping watches: accuracy for classifiers, the eval loss otherwise (or what was set)."""
    if configured != "auto":
        return configured if configured == "eval_loss" else configured.removeprefix("eval_")
    return "accuracy" if task == "seq-cls" else "eval_loss"
