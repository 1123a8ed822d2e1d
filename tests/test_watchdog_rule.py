"""The watchdog's rule on synthetic event streams (the times are the point): a healthy run whose steps are logged
only every few steps, or that was resumed after a slow evaluation, is not called stalled; a silent engine still is."""

from __future__ import annotations

from loratui.core.fold import RunFold
from loratui.core.protocol import RunState

LIVE = dict(live_pid=4242, live_since=999.0)


def _part(t0: float, **started) -> list[dict]:
    """What an engine says while it loads, then its 'started' at t0 + 10."""
    return [{"kind": "phase", "time": t0, "phase": "checking"},
            {"kind": "phase", "time": t0 + 1, "phase": "preparing data"},
            {"kind": "phase", "time": t0 + 2, "phase": "loading model"},
            {"kind": "started", "time": t0 + 10, "max_steps": 8, "eval_examples": 80, "final_eval_examples": 80,
             "effective_batch": 8, **started}]


def _step(t: float, step: int) -> list[dict]:
    return [{"kind": "step", "time": t, "step": step, "max_steps": 8, "loss": 1.0},
            {"kind": "memory", "time": t, "step": step, "device": "cpu"}]


def _state(events: list[dict], now: float) -> RunState:
    return RunFold().add_all(events).summary(now=now, **LIVE).state


def test_a_resumed_run_busy_between_logged_steps_is_not_stalled():
    """The QA walk: logging_steps 5, eval_steps 4, max_steps 8, every one of the 80 held-out rows evaluated (slow on
    a CPU); stopped after step 1, resumed. Resume to the eval at step 4 took 201 s of silence; 157 s after step 5
    (steps 6-8 and the eval at 8 under way) the run read 'stalled at step 5' and finished normally 40 s later."""
    cfg = dict(logging_steps=5, eval_steps=4)
    events = _part(1000, **cfg) + [
        {"kind": "phase", "time": 1011, "phase": "training"},
        {"kind": "phase", "time": 1011, "phase": "evaluating the base model"},
        {"kind": "eval", "time": 1100, "step": 0, "eval_loss": 0.38, "examples": 80, "runtime": 88.0},
        {"kind": "phase", "time": 1100, "phase": "training"},
        *_step(1130, 1),
        {"kind": "checkpoint", "time": 1131, "step": 1, "path": "checkpoints/checkpoint-1"},
        {"kind": "stopped", "time": 1132, "step": 1},
    ] + _part(2000, resumed=True, **cfg) + [
        {"kind": "resumed", "time": 2011, "step": 1, "checkpoint": "checkpoints/checkpoint-1"},
        {"kind": "phase", "time": 2011, "phase": "training"},
        {"kind": "eval", "time": 2212, "step": 4, "eval_loss": 0.2, "examples": 80, "runtime": 150.0},
        *_step(2240, 5),
    ]
    assert _state(events, now=2240 + 157) == RunState.RUNNING
    assert _state(events, now=2240 + 600) == RunState.RUNNING
    s = RunFold().add_all(events).summary(now=2240 + 4000, **LIVE)  # a silent engine is still told, in time
    assert s.state == RunState.STALLED and s.step == 5
    # and the rest of the run comes: running again, then finished
    done = events + [{"kind": "eval", "time": 2440, "step": 8, "eval_loss": 0.1, "examples": 80, "runtime": 150.0},
                     {"kind": "phase", "time": 2440, "phase": "saving"},
                     {"kind": "finished", "time": 2445, "step": 8, "adapter": "adapter"}]
    assert _state(done, now=2446) == RunState.FINISHED


def test_silences_before_a_resume_count_after_it():
    """A run whose first part had a 200 s evaluation, resumed and logging every step at 1 s: the next evaluation's
    silence is no stall (the resumed part alone had seen only 1 s silences)."""
    events = _part(1000) + [*_step(1011, 1), *_step(1012, 2),
                            {"kind": "eval", "time": 1212, "step": 2, "eval_loss": 0.3, "examples": 80},
                            {"kind": "stopped", "time": 1213, "step": 2}]
    events += _part(2000, resumed=True) + [{"kind": "resumed", "time": 2011, "step": 2}]
    events += [e for i in range(3, 8) for e in _step(2011 + i, i)]
    assert _state(events, now=2018 + 190) == RunState.RUNNING
    assert _state(events, now=2018 + 2100) == RunState.STALLED


def test_steps_logged_every_n_steps_get_n_steps_of_silence():
    """logging_steps 50 at 2 s a step: after step 1 (always logged) the next step event comes 98 s later, and a long
    run's steps between logged ones are allowed their time; a silent engine is still told."""
    events = _part(1000, logging_steps=50) + [*_step(1012, 1)]
    for e in events:
        if e["kind"] in ("started", "step"):
            e["max_steps"] = 1000
    assert _state(events, now=1012 + 300) == RunState.RUNNING
    assert _state(events, now=1012 + 1000) == RunState.STALLED
