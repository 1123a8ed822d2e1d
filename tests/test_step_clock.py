"""tokens/s counts training time: an evaluation between two logged steps does not lower the rate the log line and
the Monitor show (a walk at 80x24 read 55 tok/s in the Monitor's header beside a log line's 191)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loratui.core.config import RunConfig
from loratui.train import callbacks


def test_an_evaluation_between_logged_steps_is_not_training_time(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    said: list[dict] = []
    tokens = [0]
    engine = SimpleNamespace(
        cfg=RunConfig.model_validate({}), trainer=SimpleNamespace(tokens_seen=lambda: tokens[0]),
        spikes=SimpleNamespace(observe=lambda step, loss: None), echo=lambda line: None,
        emit=lambda kind, **ev: said.append({"kind": kind, **ev}) or ev, progress=lambda ev: None,
        emit_memory=lambda step: None, full_eval=None, n_eval=16, eval_final=False, early=None,
        keep_best=lambda step: None)
    cb = callbacks.EventsCallback(engine)
    args, control = SimpleNamespace(), SimpleNamespace(should_training_stop=False, should_save=True)

    def state(step):
        return SimpleNamespace(global_step=step, max_steps=100, epoch=step / 100)

    cb.t0 = cb.last_t = clock[0]  # what on_train_begin sets (it also starts the several-process agreement)
    cb.mark = None
    for step, (dt, evaluation) in enumerate([(1.0, 0.0), (1.0, 0.0), (1.0, 8.0), (1.0, 0.0)], 1):
        clock[0] += dt
        tokens[0] += 500
        cb.on_log(args, state(step), control, logs={"loss": 1.0, "learning_rate": 1e-4})
        if evaluation:  # the Trainer evaluates after this step: eval_runtime seconds pass
            clock[0] += evaluation
            cb.on_evaluate(args, state(step), control, metrics={"eval_loss": 0.9, "eval_runtime": evaluation})
    steps = [e for e in said if e["kind"] == "step"]
    assert [e["elapsed"] for e in steps] == [1.0, 2.0, 3.0, 4.0]  # 8 s of evaluation left out
    assert steps[-1]["tokens_per_s"] == pytest.approx(500.0)  # the line after the evaluation: 500 tokens in 1 s
