"""The Trainer's per-step host work done once (loratui.train.trainers.trim_step_host_work): the same run, step for
step, as the stock Trainer's walks over every module and parameter, evaluation in the middle included."""

from __future__ import annotations

from loratui.cli import main as cli_main
from loratui.core import runs
from loratui.train import trainers
from test_engine import write_config


def losses(tmp_path, tiny_llama, runs_dir, name: str) -> list[tuple[int, float]]:
    cfg = write_config(tmp_path, tiny_llama, runs_dir, lora={"r": 4, "alpha": 8, "dropout": 0.3},
                       train={"max_steps": 6, "logging_steps": 1, "eval_steps": 2, "save_steps": 6, "seed": 7},
                       output={"runs_dir": str(runs_dir), "name": name})
    assert cli_main(["train", str(cfg)]) == 0
    steps = [e for e in runs.RunDir(runs_dir / name).events() if e["kind"] == "step"]
    return [(e["step"], e["loss"]) for e in steps]


def test_trimmed_steps_train_as_the_stock_trainer_does(tmp_path, tiny_llama, runs_dir, monkeypatch):
    calls = []
    trim = trainers.trim_step_host_work
    monkeypatch.setattr(trainers, "trim_step_host_work", lambda t, m: calls.append(m) or trim(t, m))
    trimmed = losses(tmp_path, tiny_llama, runs_dir, "trimmed")
    assert len(calls) == 1 and "train" in vars(calls[0])  # once a run, on the model the Trainer steps
    monkeypatch.setattr(trainers, "trim_step_host_work", lambda t, m: [])  # the Trainer's own walks
    stock = losses(tmp_path, tiny_llama, runs_dir, "stock")
    # dropout back on after each evaluation, gradients cleared each step, clipping over the same gradients
    assert len(trimmed) == 6 and trimmed == stock
