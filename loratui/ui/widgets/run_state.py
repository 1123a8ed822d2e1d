"""What the monitor knows about a run, folded from its events (no textual, no torch: testable on its own).

The run worker thread owns a :class:`RunModel`, applies every event to it, and posts ``RunModel.snapshot()``:
an immutable :class:`RunView` whose curves are already downsampled, so a 100k-step history costs the UI thread
no more than a 200-step one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("finished", "stopped", "failed")


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


@dataclass(frozen=True)
class RunView:
    """An immutable picture of a run at one moment (what the monitor renders)."""

    name: str = ""
    model: str = ""
    method: str = ""
    task: str = ""
    device: str = ""
    precision: str = ""
    trainable_params: int | None = None
    total_params: int | None = None
    train_examples: int | None = None
    eval_examples: int | None = None
    phase: str = ""
    lifecycle: str | None = None
    """Kind of the newest started/resumed/finished/stopped/failed event."""
    step: int = 0
    max_steps: int = 0
    epoch: float | None = None
    epochs: float | None = None
    loss: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    elapsed: float | None = None
    """Training seconds as of the newest step event (or the runtime once finished)."""
    eta: float | None = None
    """Seconds left, from the step rate since (re)start."""
    eval_loss: float | None = None
    best_eval_loss: float | None = None
    best_eval_step: int | None = None
    accuracy: float | None = None
    best_accuracy: float | None = None
    perplexity: float | None = None
    memory: dict | None = None
    """Newest memory event (allocated_gb, reserved_gb, peak_allocated_gb)."""
    checkpoint: str | None = None
    adapter: str | None = None
    train_loss: float | None = None
    runtime_s: float | None = None
    failure: dict | None = None
    """The failed event: error, message, hint, field."""
    resumes: int = 0
    events: int = 0
    loss_points: tuple[list[float], list[float]] = ([], [])
    eval_points: tuple[list[float], list[float]] = ([], [])
    lr_points: tuple[list[float], list[float]] = ([], [])

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0


class RunModel:
    """Folds events into a :class:`RunView`. Not thread-safe: one owner (the worker) applies events."""

    def __init__(self, max_points: int = 512):
        self.view = RunView()
        self.loss = SeriesBuffer(max_points)
        self.eval = SeriesBuffer(max_points)
        self.lr = SeriesBuffer(max_points)
        self._changes: dict[str, Any] = {}
        self._rate_origin: tuple[float, int] | None = None  # (event time, step) where the current segment began

    def apply(self, events: list[dict]) -> None:
        ch = self._changes
        for ev in events:
            kind = ev.get("kind")
            handler = getattr(self, f"_on_{kind}", None) if isinstance(kind, str) else None
            if handler is not None:
                try:
                    handler(ev, ch)
                except (TypeError, ValueError):
                    pass  # a malformed event never stops the monitor
        ch["events"] = self.view.events + len(events)
        self.view = dataclasses.replace(self.view, **ch)
        ch.clear()

    def _get(self, key: str) -> Any:
        return self._changes.get(key, getattr(self.view, key))

    # -- handlers ------------------------------------------------------------------------------------------------

    def _on_phase(self, ev: dict, ch: dict) -> None:
        ch["phase"] = str(ev.get("phase", ""))

    def _on_started(self, ev: dict, ch: dict) -> None:
        for key in ("model", "method", "task", "device", "precision"):
            if ev.get(key) is not None:
                ch[key] = str(ev[key])
        if ev.get("run"):
            ch["name"] = str(ev["run"])
        for key in ("trainable_params", "total_params", "train_examples", "eval_examples"):
            if ev.get(key) is not None:
                ch[key] = int(ev[key])
        if ev.get("max_steps"):
            ch["max_steps"] = int(ev["max_steps"])
        if ev.get("epochs") is not None:
            ch["epochs"] = float(ev["epochs"])
        ch["lifecycle"] = "started"
        ch["failure"] = None
        self._rate_origin = None

    def _on_resumed(self, ev: dict, ch: dict) -> None:
        ch["lifecycle"] = "resumed"
        ch["resumes"] = self._get("resumes") + 1
        ch["failure"] = None
        if ev.get("step") is not None:
            ch["step"] = int(ev["step"])
        self._rate_origin = None

    def _on_step(self, ev: dict, ch: dict) -> None:
        step = int(ev["step"])
        t = float(ev.get("time") or 0)
        if ev.get("max_steps"):
            ch["max_steps"] = int(ev["max_steps"])
        if self._rate_origin is None:
            self._rate_origin = (t, step)
        replay = self.loss.last_x is not None and step <= self.loss.last_x  # re-logged after a resume
        ch["step"] = step
        for key in ("epoch", "lr", "grad_norm", "tokens_per_s", "elapsed"):
            if ev.get(key) is not None:
                ch[key] = float(ev[key])
        if ev.get("loss") is not None:
            ch["loss"] = float(ev["loss"])
            if not replay:
                self.loss.append(step, float(ev["loss"]))
        if ev.get("lr") is not None and not replay:
            self.lr.append(step, float(ev["lr"]))
        t0, s0 = self._rate_origin
        max_steps = self._get("max_steps")
        if max_steps and step > s0 and t > t0:
            ch["eta"] = max(0.0, (max_steps - step) * (t - t0) / (step - s0))

    def _on_eval(self, ev: dict, ch: dict) -> None:
        step = ev.get("step")
        loss = ev.get("eval_loss")
        if loss is not None:
            loss = float(loss)
            ch["eval_loss"] = loss
            if step is not None:
                self.eval.append(int(step), loss)
            best = self._get("best_eval_loss")
            if best is None or loss < best:
                ch["best_eval_loss"] = loss
                ch["best_eval_step"] = int(step) if step is not None else None
        if ev.get("perplexity") is not None:
            ch["perplexity"] = float(ev["perplexity"])
        acc = ev.get("accuracy")
        if acc is not None:
            acc = float(acc)
            ch["accuracy"] = acc
            best = self._get("best_accuracy")
            if best is None or acc > best:
                ch["best_accuracy"] = acc

    def _on_memory(self, ev: dict, ch: dict) -> None:
        ch["memory"] = {k: ev.get(k) for k in ("device", "allocated_gb", "reserved_gb", "peak_allocated_gb")}

    def _on_checkpoint(self, ev: dict, ch: dict) -> None:
        ch["checkpoint"] = str(ev.get("path") or "")

    def _on_finished(self, ev: dict, ch: dict) -> None:
        ch["lifecycle"] = "finished"
        ch["eta"] = 0.0
        if ev.get("step") is not None:
            ch["step"] = max(self._get("step"), int(ev["step"]))
        if ev.get("adapter"):
            ch["adapter"] = str(ev["adapter"])
        for key in ("train_loss", "runtime_s"):
            if ev.get(key) is not None:
                ch[key] = float(ev[key])
        if ev.get("runtime_s") is not None:
            ch["elapsed"] = float(ev["runtime_s"])

    def _on_stopped(self, ev: dict, ch: dict) -> None:
        ch["lifecycle"] = "stopped"
        ch["eta"] = None
        if ev.get("step") is not None:  # the engine saved at this step, past the last logged one
            ch["step"] = max(self._get("step"), int(ev["step"]))
        if ev.get("adapter"):
            ch["adapter"] = str(ev["adapter"])
        if ev.get("checkpoint"):
            ch["checkpoint"] = str(ev["checkpoint"])

    def _on_failed(self, ev: dict, ch: dict) -> None:
        ch["lifecycle"] = "failed"
        ch["eta"] = None
        ch["failure"] = {k: ev.get(k) for k in ("error", "message", "hint", "field")}

    # -- output --------------------------------------------------------------------------------------------------

    def snapshot(self) -> RunView:
        return dataclasses.replace(self.view, loss_points=self.loss.points(), eval_points=self.eval.points(),
                                   lr_points=self.lr.points())


def format_duration(seconds: float | None) -> str:
    """1:02:03 / 4:05 / -"""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_count(n: int | None) -> str:
    """460.8K / 135.0M / 7.2B / -"""
    if n is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)
