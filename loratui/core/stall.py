"""The watchdog's rule: how long a running run may say nothing before it counts as ``stalled``.

A run is stalled once its engine has been silent for :data:`STALL_FACTOR` times the silence it should expect now,
at least :data:`STALL_MIN_S`. Silences are kept over every part of the run (a resumed part inherits those of the
parts before it), counted from each part's ``started`` (loading a model is not training), and sorted by what they
were: an evaluation it knew to expect (``eval_steps``, the base model's), the wait for a part's first logged step
(warm-up, a resume), or a routine one between steps. The silence it should expect now is the longer of

- the longest routine silence so far (before the part's first step: the longest first-step wait too);
- what comes before its next event: the steps until the next logged one (an engine writes a step event only every
  ``logging_steps`` steps) at the run's pace (training seconds a step, evaluations left out), plus an evaluation
  when one falls among them, as long as its evaluations have taken (before the first one: as long as training on
  as many rows takes).

The final evaluation on the whole held-out set after a curve on a slice of it is allowed the longest evaluation
times its share. A part is not judged before it trains: loading and the base model's evaluation are judged once a
step has come, or at once after a resume when the pace of an earlier part is known.

:class:`StallWatch` sees each event once (the fold feeds it), so every view (Monitor, Runs, ``loratui runs``) gets
the same verdict. Light module (no torch, no Textual).
"""

from __future__ import annotations

from loratui.core.protocol import TERMINAL_KINDS, Event

#: a running run counts as stalled after this many seconds without an event, or STALL_FACTOR times the silence it
#: should expect (its longest routine one so far, or its next logged step and evaluation), whichever is longer
STALL_MIN_S = 120.0
STALL_FACTOR = 10.0


class StallWatch:
    """Folds events into what the watchdog needs: the silences seen (routine ones, the first steps of a part, the
    evaluations), the pace, the run's logging and evaluation intervals. Incremental; the fold owns one."""

    def __init__(self) -> None:
        self.longest = 0.0  # the longest routine silence of training (between steps), over every part of the run
        self.first_s = 0.0  # the longest wait for a part's first step event (warm-up, a resume), every part
        self.eval_s: float | None = None  # the longest evaluation seen (on the curve's rows), every part
        self.last: float | None = None  # the open part's newest event time
        self.counting = False  # the open part has said 'started': its silences are training's
        self.judged = False  # the open part trains: a silence now may be a stall
        self.stepped = False  # the open part has logged a step
        self.pace: float | None = None  # training seconds a step (evaluations left out), the newest part's
        self.step = 0  # the newest step the open part has reached
        self._evals = 0.0  # the open part's evaluation seconds so far (the training clock skips them)
        self._from: tuple[float, int] | None = None  # the open part's first point of progress (training clock, step)
        self._first: tuple[float, int] | None = None  # its first logged step (the pace once a second one comes)
        self.log_every = 1  # a step event every this many steps (train.logging_steps)
        self.eval_every: int | None = None  # an evaluation every this many steps (train.eval_steps)
        self.eval_rows: int | None = None  # held-out rows an evaluation during training reads
        self.batch = 1  # sequences a step trains on
        self.final_ratio = 1.0  # the final evaluation's rows over the curve's
        self._logged: int | None = None  # the open part's newest logged step (infers log_every when not told)
        self._told = False  # the engine said its logging_steps

    def add(self, ev: Event, new_process: bool) -> None:
        t = ev.time
        if t is None:
            return
        if new_process:  # a new engine process: what it says before 'started' is loading, not training
            self.last, self.counting, self.judged, self._logged = None, False, False, None
        if ev.kind in TERMINAL_KINDS:
            self.last, self.counting, self.judged = None, False, False
            return
        gap = t - self.last if self.counting and self.last is not None else None
        self.last = max(self.last or t, t)
        is_eval = ev.kind == "eval" and not ev.get("final")
        if is_eval:
            runtime = ev.get("runtime")
            took = float(runtime) if isinstance(runtime, (int, float)) and runtime > 0 else gap
            if took is not None:
                self.eval_s = max(self.eval_s or 0.0, took)
                self._evals += took
        if gap is not None:
            if is_eval and (self.eval_every or ev.get("step") == 0):
                pass  # an evaluation it knows to expect: its own allowance (eval_s)
            elif not self.stepped:
                self.first_s = max(self.first_s, gap)
            else:
                self.longest = max(self.longest, gap)
        if ev.kind == "started":
            self._on_started(ev, t)
        elif ev.kind == "resumed":
            self.step, self._first = int(ev.get("step") or 0), None
            self._evals, self._from = 0.0, (t, self.step)
            self.judged = self.judged or self.pace is not None
        elif ev.kind == "phase" and ev.get("phase") == "training" and self.counting:
            self.judged = self.judged or self.pace is not None
        elif ev.kind in ("step", "eval", "checkpoint") and ev.get("step") is not None:
            self._progress(t, int(ev.get("step")), ev.kind == "step")
            if ev.kind == "step":
                self.judged = self.stepped = True
                self._log_interval(int(ev.get("step")))

    def _on_started(self, ev: Event, t: float) -> None:
        self.counting, self.stepped, self._evals, self._first = True, False, 0.0, None
        self.step, self._from = 0, None if ev.get("resumed") else (t, 0)
        n, final = ev.get("eval_examples"), ev.get("final_eval_examples")
        self.final_ratio = max(1.0, final / n) if n and final else 1.0
        self.eval_rows = n or None
        self.batch = int(ev.get("effective_batch") or 1)
        if ev.get("logging_steps"):
            self.log_every, self._told = int(ev.get("logging_steps")), True
        self.eval_every = int(ev.get("eval_steps")) if ev.get("eval_steps") else None

    def _progress(self, t: float, step: int, logged: bool) -> None:
        """The pace: training seconds a step between the part's first two logged steps and on (warm-up left out),
        until then from where the part began (its start or its resume)."""
        clock = t - self._evals
        if self._from is None:
            self._from = (clock, step)
        t0, s0 = self._first if self._first is not None and step > self._first[1] else self._from
        if step > s0 and clock > t0:
            self.pace = (clock - t0) / (step - s0)
        if logged and self._first is None:
            self._first = (clock, step)
        self.step = max(self.step, step)

    def _log_interval(self, step: int) -> None:
        """Without the engine's word (older runs), the steps between its two newest step events."""
        if not self._told and self._logged is not None and step > self._logged > 1:  # (step 1 is always logged)
            self.log_every = step - self._logged
        self._logged = step

    def expected(self, max_steps: int | None = None) -> float:
        """Seconds until the next event: the steps to the next logged one at the run's pace, and an evaluation
        among them."""
        if self.pace is None:
            return 0.0
        nxt = (self.step // self.log_every + 1) * self.log_every
        if max_steps and self.step < max_steps:
            nxt = min(nxt, max_steps)
        wait = self.pace * max(1, nxt - self.step)
        if self.eval_every and nxt // self.eval_every > self.step // self.eval_every:
            wait += self.eval_s if self.eval_s is not None else self.pace * (self.eval_rows or 0) / self.batch
        return wait

    def allowed(self, phase: str, max_steps: int | None = None, min_s: float = STALL_MIN_S,
                factor: float = STALL_FACTOR) -> float | None:
        """Seconds of silence after which the open part counts as stalled; None while it is not judged (loading, the
        base model's evaluation, before the first step of a run with no known pace)."""
        if not self.judged or self.last is None:
            return None
        if phase.startswith("final eval"):  # the whole held-out set after a curve on a slice of it
            return max(min_s, factor * max(self.longest, self.eval_s or 0.0) * self.final_ratio)
        start = 0.0 if self.stepped else self.first_s  # a resumed part before its first step: the start's own time
        return max(min_s, factor * max(self.longest, start, self.expected(max_steps)))
