"""The learning-rate schedule a run plans, step by step: what the Monitor's lr panel draws (the whole plan, a marker
at the current step), computed from the run's config as transformers' schedulers compute it. Light module."""

from __future__ import annotations

import math
from typing import Any

#: transformers' defaults for the schedulers that take more than a warm-up
COSINE_CYCLES = 0.5
RESTART_CYCLES = 1
POLY_END = 1e-7


def warmup_steps(train: dict[str, Any], max_steps: int) -> int:
    """train.warmup_steps when set, else the ratio of the run's steps (rounded up, as the Trainer does)."""
    steps = int(train.get("warmup_steps") or 0)
    return steps if steps > 0 else math.ceil(float(train.get("warmup_ratio") or 0.0) * max_steps)


def lr_factor(scheduler: str, step: float, max_steps: int, warmup: int) -> float:
    """The multiple of the peak learning rate at ``step`` (0..1)."""
    if warmup and step < warmup:
        return 1.0 if scheduler == "constant" else step / warmup
    if scheduler in ("constant", "constant_with_warmup"):
        return 1.0
    span = max(1, max_steps - warmup)
    progress = min(1.0, max(0.0, (step - warmup) / span))
    if scheduler == "linear":
        return 1.0 - progress
    if scheduler == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * COSINE_CYCLES * 2.0 * progress)))
    if scheduler == "cosine_with_restarts":
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((RESTART_CYCLES * progress) % 1.0))))
    if scheduler == "polynomial":
        return max(0.0, 1.0 - progress)  # power 1 down to (almost) nothing
    return 1.0


def planned_lr(train: dict[str, Any], max_steps: int, points: int,
               cuts: list[tuple[int, float]] = ()) -> list[tuple[float, float]]:
    """(step, learning rate) at ``points`` evenly spaced steps from 0 to ``max_steps``. ``cuts``: the run's
    roll-backs in the order they happened, (step trained again from, schedule multiplier from then on); a step
    follows the newest roll-back that went back to it or before it."""
    if max_steps <= 0 or points < 1:
        return []
    peak = float(train.get("lr") or 0.0)
    scheduler = str(train.get("scheduler") or "linear")
    warmup = warmup_steps(train, max_steps)
    steps = [max_steps * i / max(1, points - 1) for i in range(points)]

    def scale(s: float) -> float:
        return next((f for at, f in reversed(cuts) if s >= at), 1.0)

    return [(s, peak * lr_factor(scheduler, s, max_steps, warmup) * scale(s)) for s in steps]
