"""A run's figures step by step, as the one fold (:class:`loratui.core.fold.RunFold`) keeps them: each counted step's
logged train loss (steps trained again after a resume replace the old) and each step's evaluation, and the step
whose weights the run's adapter holds. An adapter or a checkpoint saved at step N was trained to :meth:`at` (N): the
Adapters screen shows it beside the Monitor's and the Runs list's figures, which come from the same fold.

Light module (no torch, no Textual).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass


@dataclass(frozen=True)
class StepFigures:
    """What a run had reached at ``step``: the train loss logged at it (or the newest before it: ``loss_step``) and
    the evaluation at that very step, if there was one."""

    step: int
    loss: float | None = None
    loss_step: int | None = None
    eval_loss: float | None = None
    accuracy: float | None = None
    eval_final: bool = False
    """The evaluation is the final one (on the whole held-out set when the curve used a slice of it)."""
    eval_examples: int | None = None


class EvalCurve:
    """Which evaluations draw a run's eval-loss curve: each one on the curve's held-out rows. The final evaluation
    on the whole held-out set after a curve on a slice of it (data.eval_samples) measures other rows: joined to the
    line, its last segment showed the slice's sampling error as a last-step jump. The views give it as the run's
    final figure instead (Monitor's text, Compare's table, the Adapters' detail)."""

    __slots__ = ("examples",)

    def __init__(self) -> None:
        self.examples: int | None = None  # the curve's rows: the first evaluation's count

    def takes(self, final: bool, examples: int | None) -> bool:
        if not final:
            if self.examples is None:
                self.examples = examples
            return True
        return examples is None or self.examples is None or examples == self.examples


class StepHistory:
    """Train losses of the steps that count and the evaluations by step. Incremental; one owner (the fold)."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []  # (step, loss), steps increasing
        # each logged loss is the mean over the steps since the one before: weighted by them, the mean is the
        # Trainer's own train_loss (the mean over every step), whatever logging_steps was
        self._weights: list[int] = []
        self.loss_sum = 0.0
        self.evals: dict[int, tuple[float | None, float | None, bool, int | None]] = {}
        self.adapter_step: int | None = None
        """The step the run's adapter folder was saved at (the best step under early stopping); None: not saved."""

    def add_loss(self, step: int, loss: float) -> None:
        self._drop_from(step)  # re-logged after a resume
        weight = max(1, step - (self.losses[-1][0] if self.losses else 0))
        self.losses.append((step, loss))
        self._weights.append(weight)
        self.loss_sum += loss * weight

    def resumed(self, step: int) -> None:
        """Training goes on from ``step``: what was logged after it is trained again."""
        self._drop_from(step + 1)
        for s in [s for s in self.evals if s > step]:
            del self.evals[s]

    def _drop_from(self, step: int) -> None:
        while self.losses and self.losses[-1][0] >= step:
            self.loss_sum -= self.losses.pop()[1] * self._weights.pop()

    def add_eval(self, step: int | None, eval_loss: float | None, accuracy: float | None = None, *,
                 final: bool = False, examples: int | None = None) -> None:
        """An evaluation at ``step``; a later one at the same step (the final one) replaces it."""
        if step is not None and (eval_loss is not None or accuracy is not None):
            self.evals[step] = (eval_loss, accuracy, final, examples)

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / sum(self._weights) if self.losses else None

    def at(self, step: int) -> StepFigures:
        """The figures of ``step``: the newest train loss logged at or before it, the evaluation at it."""
        i = bisect.bisect_right(self.losses, step, key=lambda p: p[0])
        loss_step, loss = self.losses[i - 1] if i else (None, None)
        eval_loss, accuracy, final, examples = self.evals.get(step, (None, None, False, None))
        return StepFigures(step=step, loss=loss, loss_step=loss_step, eval_loss=eval_loss, accuracy=accuracy,
                           eval_final=final, eval_examples=examples)
