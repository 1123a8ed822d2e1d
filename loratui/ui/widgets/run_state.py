"""What the monitor knows about a run (no textual, no torch: testable on its own).

The numbers come from the one fold of the run protocol (:class:`loratui.core.fold.RunFold`), the same one the
Runs screen and ``loratui runs`` show; this module adds the curves. The run worker thread owns a :class:`RunModel`,
applies every event to it, and posts ``RunModel.snapshot(summary)``: a :class:`RunView` whose curves are already
downsampled, so a 100k-step history costs the UI thread no more than a 200-step one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from loratui.core.fmt import format_count, format_duration  # noqa: F401 - re-exported for the screens
from loratui.core.fold import RunFold, RunSummary
from loratui.core.protocol import TERMINAL_KINDS, Event
from loratui.core.step_history import EvalCurve

TERMINAL = TERMINAL_KINDS


class SeriesBuffer:
    """An (x, y) series kept at most ``max_points`` long by averaging neighbours: O(1) amortised per point.

    Every bucket holds ``bucket`` consecutive points (the newest may hold fewer); when there are too many
    buckets, pairs merge and ``bucket`` doubles. Each plotted point is the mean of its bucket, which also
    smooths the noise of a long loss curve.
    """

    __slots__ = ("max_points", "bucket", "_sx", "_sy", "_n", "count", "last_x", "last_y")

    def __init__(self, max_points: int = 512):
        self.max_points = max(2, max_points - max_points % 2)
        self.bucket = 1
        self._sx: list[float] = []
        self._sy: list[float] = []
        self._n: list[int] = []
        self.count = 0
        self.last_x: float | None = None
        self.last_y: float | None = None

    def append(self, x: float, y: float) -> None:
        self.count += 1
        self.last_x, self.last_y = x, y
        if self._n and self._n[-1] < self.bucket:
            self._sx[-1] += x
            self._sy[-1] += y
            self._n[-1] += 1
        else:
            self._sx.append(x)
            self._sy.append(y)
            self._n.append(1)
            if len(self._n) > self.max_points:
                self._halve()

    def _halve(self) -> None:
        sx, sy, n = self._sx, self._sy, self._n
        self._sx = [sx[i] + sx[i + 1] if i + 1 < len(sx) else sx[i] for i in range(0, len(sx), 2)]
        self._sy = [sy[i] + sy[i + 1] if i + 1 < len(sy) else sy[i] for i in range(0, len(sy), 2)]
        self._n = [n[i] + n[i + 1] if i + 1 < len(n) else n[i] for i in range(0, len(n), 2)]
        self.bucket *= 2

    def points(self) -> tuple[list[float], list[float]]:
        xs = [sx / n for sx, n in zip(self._sx, self._n)]
        ys = [sy / n for sy, n in zip(self._sy, self._n)]
        return xs, ys

    def __len__(self) -> int:
        return len(self._n)


@dataclass
class RunView(RunSummary):
    """A picture of a run at one moment (what the monitor renders): the fold's summary plus the curves."""

    loss_points: tuple[list[float], list[float]] = ([], [])
    eval_points: tuple[list[float], list[float]] = ([], [])
    lr_points: tuple[list[float], list[float]] = ([], [])
    schedule: dict = dataclasses.field(default_factory=dict)
    """The run's planned learning rate (config train.lr, scheduler, warmup_ratio, warmup_steps); {} when unknown."""


class RunModel:
    """Folds events (through :class:`RunFold`) and keeps the curves. Not thread-safe: one owner applies events."""

    def __init__(self, max_points: int = 512):
        self.fold = RunFold()
        self.loss = SeriesBuffer(max_points)
        self.eval = SeriesBuffer(max_points)
        self.lr = SeriesBuffer(max_points)
        self._curve = EvalCurve()

    def apply(self, events: list) -> None:
        for raw in events:
            ev = self.fold.add(raw)
            if ev is None:
                continue  # a malformed event never stops the monitor
            if ev.kind == "step":
                self._on_step(ev)
            elif ev.kind == "eval" and ev.eval_loss is not None and ev.step is not None \
                    and self._curve.takes(bool(ev.get("final")), ev.get("examples")):
                self.eval.append(ev.step, ev.eval_loss)

    def _on_step(self, ev: Event) -> None:
        replay = self.loss.last_x is not None and ev.step <= self.loss.last_x  # re-logged after a resume
        if replay:
            return
        if ev.loss is not None:
            self.loss.append(ev.step, ev.loss)
        if ev.lr is not None:
            self.lr.append(ev.step, ev.lr)

    @property
    def view(self) -> RunSummary:
        """The fold's summary as the events tell it (no process check, no ticking)."""
        return self.fold.summary(events_only=True)

    def snapshot(self, summary: RunSummary | None = None) -> RunView:
        """``summary`` (default: :attr:`view`) with the curves, for the UI thread."""
        summary = summary if summary is not None else self.view
        fields = {f.name: getattr(summary, f.name) for f in dataclasses.fields(RunSummary)}
        return RunView(**fields, loss_points=self.loss.points(), eval_points=self.eval.points(),
                       lr_points=self.lr.points())
