"""Setup's estimate panel: half a second after the last edit, a thread worker counts the trainable parameters,
estimates the memory, lists the model's layers (once per model) and sees the cards; the result comes back as an
``EstimateReady`` message and fills the panel.

``SetupEstimate`` is the layer between ``SetupActions`` and ``SetupScreen`` (loratui.ui.screens.setup), which owns
the form, its values and their validation.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from rich.text import Text
from textual import on
from textual.timer import Timer
from textual.worker import get_current_worker

from loratui.core.config import RunConfig
from loratui.ui.messages import EstimateReady, FieldProblem
from loratui.ui.screens.setup_actions import SetupActions
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.form import SPECS_BY_PATH
from loratui.ui.widgets.setup_panel import EstimatePanel, problem_text
from loratui.ui.widgets.setup_values import model_key


class SetupEstimate(SetupActions):
    """The estimate panel's worker and what its result changes on the form."""

    DEBOUNCE = 0.5
    layers_cache: dict[str, list[str] | None]
    gpus_seen: list[Any] | None
    _timer: Timer | None
    _seq: int
    #: why the last estimate failed, when a field is the reason (shown under that field until an estimate succeeds)
    estimate_problem: FieldProblem | None = None

    def schedule_estimate(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self.DEBOUNCE <= 0:
            self.start_estimate()
        else:
            self._timer = self.set_timer(self.DEBOUNCE, self.start_estimate)

    def start_estimate(self) -> None:
        self._timer = None
        cfg = self.build_config()
        if cfg is None:
            return
        key = cfg.model_dump_json(exclude={"output"})
        if key == self._estimated_key:
            return
        self._estimated_key = key
        self._seq += 1
        mkey = model_key(self.values)
        want_layers = mkey not in self.layers_cache
        self.query_one(EstimatePanel).show_pending()
        self.run_worker(
            partial(self._estimate_thread, cfg, self._seq, mkey, want_layers),
            name="estimate", group="setup-estimate", description="Estimating parameters and memory",
            thread=True, exclusive=True, exit_on_error=False,
        )

    def _estimate_thread(self, cfg: RunConfig, seq: int, mkey: str, want_layers: bool) -> None:
        result = setup_core.compute_estimate(cfg, want_layers=want_layers)
        if not get_current_worker().is_cancelled:
            self.post_message(EstimateReady(seq, mkey, result))

    @on(EstimateReady)
    def _estimate_ready(self, msg: EstimateReady) -> None:
        if msg.result.layers is not None or msg.model_key not in self.layers_cache:
            if msg.result.layers is not None:
                self.layers_cache[msg.model_key] = msg.result.layers
        if msg.seq != self._seq:
            return
        if msg.result.gpus is not None and msg.result.gpus != self.gpus_seen:
            self.gpus_seen = list(msg.result.gpus)
            ff = self.mounted_field("train.gpus")
            if ff is not None:
                self.check_field(ff.spec, ff.get_raw())
                self._refresh_status()
        at = self.show_estimate_problem(msg.result.problem)
        cfg = self.build_config()
        if cfg is not None:
            self.query_one(EstimatePanel).show_result(msg.result, cfg, problem_at=at)
        if msg.result.layers is not None:
            self.recheck_targets()
            self._refresh_status()

    def show_estimate_problem(self, problem: FieldProblem | None) -> str | None:
        """Show why the estimate failed under the field that is the reason (once: the panel only points at it);
        the label of that field, or None when it is not on the form (the panel then says it)."""
        old, self.estimate_problem = self.estimate_problem, problem
        for p in {x.field for x in (old, problem) if x is not None}:
            if p in SPECS_BY_PATH:
                self._set_error(SPECS_BY_PATH[p], self.errors.get(p))
        ff = self.mounted_field(problem.field) if problem is not None and problem.field in SPECS_BY_PATH else None
        return ff.spec.label if ff is not None and ff.display else None

    def estimate_problem_text(self, path: str) -> Text | None:
        """What shows under ``path`` when its value is valid but the estimate could not use it."""
        problem = self.estimate_problem
        return problem_text(problem) if problem is not None and problem.field == path else None
