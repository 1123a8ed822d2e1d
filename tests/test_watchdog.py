"""Issue 18: a run whose engine lives but makes no progress is 'stalled' (in the fold, so in Runs, the Monitor and
`loratui runs` alike), and 'running' again by itself when steps resume; a real engine is SIGSTOPped and SIGCONTed."""

from __future__ import annotations


import pytest

from loratui.core import fold as fold_mod
from loratui.core.fold import RunFold
from loratui.core.protocol import RunState


def _events(n_steps: int, gap: float = 1.0, t0: float = 1000.0) -> list[dict]:
    evs = [{"kind": "started", "time": t0, "max_steps": 100, "eval_examples": 16, "final_eval_examples": 80}]
    evs += [{"kind": "step", "time": t0 + gap * (i + 1), "step": i + 1, "max_steps": 100, "loss": 1.0}
            for i in range(n_steps)]
    return evs


def test_silence_far_beyond_the_runs_own_pace_is_stalled_then_running_again():
    f = RunFold().add_all(_events(5))
    last = 1005.0
    live = dict(live_pid=4242, live_since=999.0)
    assert f.summary(now=last + 30, **live).state == RunState.RUNNING
    s = f.summary(now=last + fold_mod.STALL_MIN_S + 5, **live)
    assert s.state == RunState.STALLED and s.stalled_for == pytest.approx(fold_mod.STALL_MIN_S + 5)
    assert s.state.active  # stop and checkpoint-now still reach it
    f.add({"kind": "step", "time": last + 200, "step": 6, "max_steps": 100, "loss": 1.0})
    assert f.summary(now=last + 201, **live).state == RunState.RUNNING
    # a run whose steps take long gets a longer allowance: ten times its longest silence
    slow = RunFold().add_all(_events(3, gap=60.0))
    assert slow.summary(now=1180 + 500, **live).state == RunState.RUNNING
    assert slow.summary(now=1180 + 601, **live).state == RunState.STALLED


def test_loading_and_the_final_evaluation_are_not_stalls():
    live = dict(live_pid=4242, live_since=999.0)
    loading = RunFold().add_all(_events(0))  # before the first step: loading a model can take minutes
    assert loading.summary(now=5000, **live).state == RunState.RUNNING
    f = RunFold().add_all(_events(5, gap=20.0))  # longest silence 20 s: stalled after 200 s
    f.add({"kind": "phase", "time": 1101.0, "phase": "final eval: 80 examples"})
    # the whole held-out set is 5x the curve's: 1,000 s allowed
    assert f.summary(now=1101 + 900, **live).state == RunState.RUNNING
    assert f.summary(now=1101 + 1001, **live).state == RunState.STALLED


def test_a_stopped_engine_is_stalled_and_comes_back(detached_stalled_then_stopped):
    """A real detached engine SIGSTOPped until the run reads stalled, then SIGCONTed (conftest: the run is shared with
    test_engine's stop-and-resume test, which stops it afterwards)."""
    run, seen = detached_stalled_then_stopped
    assert seen["three_steps"], seen["log"]
    assert seen["before"] == RunState.RUNNING
    assert seen["frozen"] == RunState.STALLED
    assert seen["runs_code"] == 0
    assert "stalled" in seen["runs_out"] and "no progress for" in seen["runs_out"]
    assert seen["thawed"] == RunState.RUNNING
    assert seen["after"] == "stopped"


def test_a_diverging_run_fails_naming_the_step_and_keeps_its_good_checkpoint(tmp_path, tiny_llama, monkeypatch):
    """Weights blow up at step 5 (LORATUI_TEST_NAN_AT_STEP: what a far too high learning rate does): the loss is
    logged as NaN, three bad logged steps in a row stop the run as failed, naming step 5 and the learning rate; the
    checkpoint from before (step 4) stays, the one after is removed, no adapter of NaNs is saved."""
    from loratui.core import checkpoints as ck
    from loratui.core import runs
    from loratui.core.config import RunConfig
    from loratui.train.engine import Engine

    monkeypatch.setenv("LORATUI_TEST_NAN_AT_STEP", "5")
    data = {
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 48,
                 "validation_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 20, "batch_size": 2, "lr": 5e-3, "logging_steps": 1, "save_steps": 2,
                  "save_total_limit": 5},
        "output": {"runs_dir": str(tmp_path / "runs"), "name": "boom"},
    }
    run = runs.create_run(RunConfig.model_validate(data))
    assert Engine(run, echo=lambda line: None).run() == 1
    failed = [e for e in run.events() if e["kind"] == "failed"][-1]
    assert failed["error"] == "Diverged" and failed["step"] == 7 and failed["first_bad_step"] == 5
    assert "diverged at step 5" in failed["message"] and "learning rate 0.005 is likely too high" in failed["message"]
    assert "checkpoint-4 is kept" in failed["message"]
    steps = [e for e in run.events() if e["kind"] == "step"]
    assert [e["loss"] for e in steps[4:7]] == [None, None, None]  # logged as they were (NaN is written as null)
    assert run.state() == "failed" and run.latest_checkpoint().name == "checkpoint-4"
    assert all(ck.checkpoint_step(p) < 5 for p in run.checkpoints_dir.glob("checkpoint-*"))
    assert not run.adapter_dir.exists()


def _tiny_run(tmp_path, tiny_llama, name, **train):
    from loratui.core import runs
    from loratui.core.config import RunConfig

    data = {
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 40,
                 "validation_fraction": 0.2, "max_length": 256},
        "train": {"max_steps": 20, "batch_size": 2, "logging_steps": 1, "eval_steps": 1, "save_steps": 1,
                  "save_total_limit": 30, **train},
        "output": {"runs_dir": str(tmp_path / "runs"), "name": name},
    }
    return runs.create_run(RunConfig.model_validate(data))


def test_early_stopping_stops_and_keeps_the_best_weights(tmp_path, tiny_llama, capsys):
    """An evaluation that stops improving (by more than min_delta) for `patience` evaluations stops the run
    gracefully: finished, an early_stop alert, and the adapter holds the best evaluation's weights (its step said)."""
    from safetensors.torch import load_file

    from loratui.cli import main as cli_main
    from loratui.train.engine import Engine

    run = _tiny_run(tmp_path, tiny_llama, "plateau", lr=1e-8, early_stopping_patience=2,
                    early_stopping_min_delta=0.01)
    assert Engine(run, echo=lambda line: None).run() == 0
    finished = [e for e in run.events() if e["kind"] == "finished"][-1]
    assert finished["early_stopped"] == 3 and finished["best_step"] == 1 and finished["step"] == 3
    alerts = [e for e in run.events() if e["kind"] == "alert"]
    assert [a["alert"] for a in alerts] == ["early_stop"] and "best" in alerts[0]["message"]
    adapter = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    best = load_file(str(run.checkpoints_dir / "checkpoint-1" / "adapter_model.safetensors"))
    last = load_file(str(run.checkpoints_dir / "checkpoint-3" / "adapter_model.safetensors"))
    assert all((adapter[k] == best[k]).all() for k in best)
    assert any((adapter[k] != last[k]).any() for k in last)
    summary = runs_summary(run)
    assert summary.state == "finished" and summary.best_step == 1 and summary.alerts[-1]["alert"] == "early_stop"
    assert cli_main(["runs", "--runs-dir", str(run.path.parent)]) == 0
    assert "early stopping at step 3" in capsys.readouterr().out


def runs_summary(run):
    from loratui.core.runs import summarize

    return summarize(run)


def test_spike_and_plateau_alerts():
    from loratui.train.watch import EarlyStop, SpikeWatch

    w = SpikeWatch()
    assert [w.observe(i, 1.0 + 0.01 * i) for i in range(8)] == [None] * 8
    msg = w.observe(9, 9.0)
    assert msg and "loss spike at step 9" in msg and "8.7x its recent level" in msg
    es = EarlyStop("eval_loss", patience=None)
    verdicts = [es.observe(s, {"eval_loss": v}) for s, v in enumerate([2.0, 1.5, 1.6, 1.6, 1.7, 1.6, 1.55], 1)]
    assert verdicts == ["improved", "improved", "waiting", "waiting", "waiting", "waiting", "plateau"]
    acc = EarlyStop("accuracy", patience=1)
    assert [acc.observe(s, {"accuracy": v}) for s, v in enumerate([0.5, 0.7, 0.7], 1)] == ["improved", "improved", "stop"]


def test_tensorboard_logs_are_written_into_the_run_folder(tmp_path, tiny_llama):
    """train.report_to: [tensorboard]: the Trainer's own TensorBoard callback writes event files under the run
    folder, readable by tensorboard's own reader, one train/loss point per logged step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from loratui.train.engine import Engine

    run = _tiny_run(tmp_path, tiny_llama, "tb", max_steps=4, eval_steps=2, save_steps=4, report_to=["tensorboard"])
    lines: list[str] = []
    assert Engine(run, echo=lines.append).run() == 0
    assert "checkpoint-4 saved" in lines  # engine.log (and the Monitor's log) say so, not only a toast
    acc = EventAccumulator(str(run.path / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in acc.Scalars("eval/loss")][-2:] == [2, 4]
    logged = [e["loss"] for e in run.events() if e["kind"] == "step"]
    assert [round(e.value, 4) for e in acc.Scalars("train/loss")] == [round(v, 4) for v in logged]


def test_a_missing_reporter_package_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    from loratui.cli import main as cli_main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train: {report_to: [wandb]}\noutput: {runs_dir: %s}\n" % (tmp_path / "runs"))
    assert cli_main(["train", str(cfg)]) == 2
    assert "train.report_to: wandb reporting needs the wandb package" in capsys.readouterr().err


def test_one_bad_batch_is_skipped_and_the_run_goes_on(tmp_path, tiny_llama):
    """A single non-finite loss (one bad batch, LORATUI_TEST_NAN_LOSS_AT_STEP) leaves the weights as they were: the
    run says the update was skipped and finishes with a finite adapter. Without the skip, AdamW writes NaN into
    every adapted weight and the run fails three steps later."""
    import os

    import torch
    from safetensors.torch import load_file

    from loratui.train.engine import Engine

    from loratui.core import runs
    from loratui.core.config import RunConfig

    data = {
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 32,
                 "validation_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 8, "batch_size": 2, "lr": 5e-3, "logging_steps": 1},
        "output": {"runs_dir": str(tmp_path / "runs"), "name": "one-bad"},
    }
    run = runs.create_run(RunConfig.model_validate(data))
    os.environ["LORATUI_TEST_NAN_LOSS_AT_STEP"] = "3"
    try:
        assert Engine(run, echo=lambda line: None).run() == 0
    finally:
        del os.environ["LORATUI_TEST_NAN_LOSS_AT_STEP"]
    steps = [e for e in run.events() if e["kind"] == "step"]
    assert steps[2]["step"] == 3 and steps[2]["loss"] is None  # logged as it was
    assert all(e["loss"] is not None for e in steps if e["step"] != 3)  # the weights stayed finite after it
    alerts = [e for e in run.events() if e["kind"] == "alert"]
    assert [(a["step"], a["alert"]) for a in alerts] == [(3, "skipped")]
    assert "update was skipped" in alerts[0]["message"]
    assert run.state() == "finished"
    weights = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    # a CPU run records its process's peak resident memory (Compare shows it: no GPU figure to show)
    memory = [e for e in run.events() if e["kind"] == "memory"]
    assert memory and memory[-1]["device"] == "cpu" and memory[-1]["host_peak_gb"] > 0.1


def _diverging_run(tmp_path, tiny_llama, name, monkeypatch, above_lr: str, **train):
    from loratui.core import runs
    from loratui.core.config import RunConfig
    from loratui.train.engine import Engine

    monkeypatch.setenv("LORATUI_TEST_NAN_ABOVE_LR", above_lr)  # weights blow up while the lr is too high
    data = {
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 48,
                 "validation_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 12, "batch_size": 2, "lr": 5e-3, "logging_steps": 1, "save_steps": 2,
                  "save_total_limit": 5, "on_diverge": "rollback", **train},
        "output": {"runs_dir": str(tmp_path / "runs"), "name": name},
    }
    run = runs.create_run(RunConfig.model_validate(data))
    return run, Engine(run, echo=lambda line: None).run()


def test_rollback_goes_back_to_the_last_good_checkpoint_at_a_lower_learning_rate(tmp_path, tiny_llama, monkeypatch):
    """train.on_diverge: rollback. The weights blow up from step 5 while the lr is above 3e-3 (the run's 5e-3 is
    too high): three bad steps, then back to checkpoint-4 at half the learning rate (its schedule too), and the run
    finishes with finite weights; the Monitor's fold counts it as a resume from step 4."""
    import torch
    from safetensors.torch import load_file

    run, code = _diverging_run(tmp_path, tiny_llama, "rollback", monkeypatch, "5:0.003")
    assert code == 0 and run.state() == "finished"
    events = run.events()
    alerts = [e for e in events if e["kind"] == "alert" and e["alert"] == "rollback"]
    assert len(alerts) == 1 and "rolled back to checkpoint-4" in alerts[0]["message"]
    assert "learning rate 0.0025 (x0.5), roll-back 1 of 2" in alerts[0]["message"]
    resumed = [e for e in events if e["kind"] == "resumed"]
    assert [(e["step"], e["checkpoint"].rsplit("/", 1)[-1]) for e in resumed] == [(4, "checkpoint-4")]
    steps = [e for e in events if e["kind"] == "step"]
    after = steps[[e["kind"] for e in events if e["kind"] in ("step", "resumed")].index("resumed"):]
    before = {e["step"]: e["lr"] for e in steps[:7]}
    assert after[0]["step"] == 5 and after[0]["lr"] == pytest.approx(before[5] / 2, rel=1e-6)
    assert all(e["loss"] is not None for e in after) and after[-1]["step"] == 12
    weights = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert all(bool(torch.isfinite(w).all()) for w in weights.values())
    summary = fold_mod.fold(events)
    assert summary.step == 12 and summary.resumes == 1
    # the Monitor's lr panel plans what the run did: the schedule halved from the step trained again
    assert (alerts[0]["from_step"], alerts[0]["lr_factor"]) == (4, 0.5)
    [kept] = [a for a in summary.alerts if a["alert"] == "rollback"]
    from loratui.core.schedule import planned_lr

    plan = dict(planned_lr(run.config().train.model_dump(), 12, 13, [(kept["from_step"], kept["lr_factor"])]))
    # (a step logs the lr it trained at: the schedule's value after the steps before it)
    assert all(plan[e["step"] - 1] == pytest.approx(e["lr"], rel=1e-6) for e in after)


def test_a_run_that_keeps_diverging_fails_after_its_rollbacks(tmp_path, tiny_llama, monkeypatch):
    run, code = _diverging_run(tmp_path, tiny_llama, "hopeless", monkeypatch, "5:0", max_rollbacks=1)
    assert code == 1 and run.state() == "failed"
    failed = [e for e in run.events() if e["kind"] == "failed"][-1]
    assert "after 1 roll-back(s) to a lower learning rate" in failed["message"]
    assert [e["alert"] for e in run.events() if e["kind"] == "alert"].count("rollback") == 1


def test_dpo_pushing_the_chosen_answers_down_is_said_once_with_the_fix():
    """The demo's DPO at lr 5e-4 (bench/RESULTS.md, round 7): chosen rewards -0.16, -1.46, -3.0 (beta 0.1) while the
    margin grew, and the adapter ended at 0/80 exact answers. One alert at the step it passes 5 nats, naming the fix;
    ORPO's rewards (log-likelihoods, always negative) and a rising chosen reward say nothing."""
    from types import SimpleNamespace

    from loratui.core.config import RunConfig
    from loratui.train.callbacks import EventsCallback

    def alerts(objective: str, chosen: list[float]) -> list[dict]:
        said: list[dict] = []
        engine = SimpleNamespace(cfg=RunConfig.model_validate({"method": {"objective": objective, "beta": 0.1},
                                                               "data": {"format": "preference"}}),
                                 emit=lambda kind, **ev: said.append(ev), echo=lambda line: None)
        cb = EventsCallback(engine)
        for step, c in enumerate(chosen, 1):
            cb._watch_chosen(step, {"rewards/chosen": c})
        return said

    said = alerts("dpo", [0.0, -0.16, -1.46, -3.0, -4.5])
    assert [(a["step"], a["alert"]) for a in said] == [(3, "chosen_falling")]
    assert "15 nats less likely" in said[0]["message"] and "lower train.lr" in said[0]["message"]
    assert alerts("dpo", [0.0, 0.11, 0.095]) == []  # lr 5e-5: the chosen answers rose (73/80 kept)
    assert alerts("orpo", [-1.2, -1.6, -2.0]) == []
    assert len(alerts("kto", [-0.2, -0.6])) == 1
