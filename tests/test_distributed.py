"""Several processes for one run, on CPU: torchrun with the gloo backend and two ranks on a tiny Llama.

The same code runs on GPU boxes with NCCL (bench/RESULTS.md has the 1/2/4-card runs); here CI checks the logic:
one writer, the supervisor standing for the run, stop and resume across ranks, a dead rank failing the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from loratui.core import run_control, runs
from loratui.core.config import load_config
from loratui.core.devices import plan_devices
from loratui.core.gpu import GpuInfo
from loratui.core.supervisor import workers

pytestmark = pytest.mark.timeout(300)


def make_run(tmp_path: Path, model: Path, name: str, **train) -> runs.RunDir:
    cfg = {
        "model": {"name": str(model)},
        "lora": {"r": 4, "alpha": 8},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 48,
                 "validation_fraction": 0.25, "max_length": 96},
        "train": {"max_steps": 6, "batch_size": 2, "lr": 1e-3, "logging_steps": 1, "eval_steps": 3,
                  "save_steps": 3, **train},
        "output": {"runs_dir": str(tmp_path / "runs"), "name": name},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return runs.create_run(load_config(path))


def engine(run: runs.RunDir, nproc: int, *extra: str, env: dict | None = None, wait: bool = True):
    cmd = [sys.executable, "-m", "loratui", "engine", str(run.path), "--nproc", str(nproc), *extra]
    log = open(run.log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return proc.wait(240) if wait else proc


def events(run, kind):
    return [e for e in run.events() if e["kind"] == kind]


def rank_pids(supervisor: int, timeout: float = 60) -> dict[int, psutil.Process]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = {}
        for p in workers(supervisor):
            try:
                found[int(p.environ().get("RANK", -1))] = p
            except psutil.Error:
                pass
        if len(found) == 2:
            return found
        time.sleep(0.2)
    raise AssertionError("the two ranks did not start")


def wait_for(predicate, timeout=120, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_ranks_train_like_one_process_with_the_same_effective_batch(tmp_path, tiny_llama):
    import torch
    from safetensors.torch import load_file

    ddp = make_run(tmp_path, tiny_llama, "ddp", batch_size=2)
    assert engine(ddp, 2, env={"LORATUI_TEST_RANK_WEIGHTS": "1"}) == 0, ddp.log_path.read_text()[-3000:]
    one = make_run(tmp_path, tiny_llama, "one", batch_size=4)
    from loratui.train.engine import Engine  # the single process: this one (no second torch import)
    assert Engine(one, echo=lambda line: None).run() == 0

    started = events(ddp, "started")[0]
    assert started["world_size"] == 2 and started["distributed"] == "ddp"
    assert started["per_device_batch"] == 2 and started["effective_batch"] == 4
    # one writer: a single started/finished, and the supervisor is the run's process in status.json
    assert len(events(ddp, "started")) == 1 and len(events(ddp, "finished")) == 1
    status = ddp.read_status()
    assert status["state"] == "finished" and "--nproc" in status["cmdline"]
    # the same schedule: 36 examples at 4 a step is 9 steps an epoch on both
    assert events(ddp, "step")[-1]["epoch"] == events(one, "step")[-1]["epoch"]
    # Same effective batch, learning rate and schedule; only the order of the same examples differs (each rank
    # draws from a DistributedSampler, the single process from a RandomSampler). Measured: both improve the eval
    # loss by about 0.022 over 6 steps and end within 1% of that improvement of each other; 10% allows for the order.
    base = events(one, "eval")[0]["eval_loss"]
    gain_one = base - events(one, "eval")[-1]["eval_loss"]
    gain_ddp = base - events(ddp, "eval")[-1]["eval_loss"]
    assert gain_one > 0 and gain_ddp > 0
    assert abs(gain_ddp - gain_one) < 0.1 * gain_one, (gain_ddp, gain_one)
    # every replica holds exactly the saved adapter
    saved = load_file(str(ddp.adapter_dir / "adapter_model.safetensors"))
    for rank in (0, 1):
        held = torch.load(ddp.path / "ranks" / f"weights-rank-{rank}.pt")
        assert held["step"] == 6
        lora = {k: v for k, v in held["state"].items() if "lora_" in k}
        assert len(lora) == len(saved)
        for key, value in lora.items():
            name = key.replace(".default", "")
            match = [s for s in saved if name.endswith(s.split("base_model.model.", 1)[-1])]
            assert match, key
            torch.testing.assert_close(value, saved[match[0]].float(), rtol=0, atol=0)


@pytest.fixture(scope="module")
def hung_then_stopped(tmp_path_factory, tiny_llama):
    """One two-rank run for the two tests below (a launch costs two torch imports): rank 1 frozen (SIGSTOP: a hung
    collective, a stuck loader) holds the others in their next collective, so no step comes and the run reads
    'stalled' as a single-process run does; SIGCONT and it is 'running' again; then it is stopped from outside. What
    was seen on the way is recorded; the run folder is left as the stop left it."""
    import signal

    from loratui.core import fold as fold_mod
    from loratui.core.protocol import RunState

    tmp_path = tmp_path_factory.mktemp("hung-then-stopped")
    seen = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fold_mod, "STALL_MIN_S", 2.0)
        mp.setattr(fold_mod, "STALL_FACTOR", 3.0)
        run = make_run(tmp_path, tiny_llama, "stop", max_steps=100000, save_steps=100000, eval_steps=100000)
        proc = engine(run, 2, env={"LORATUI_TEST_RANK_WEIGHTS": "1"}, wait=False)
        try:
            wait_for(lambda: len(events(run, "step")) >= 3, what="training steps")
            rank1 = rank_pids(proc.pid)[1]
            seen["before"] = run.state()
            rank1.send_signal(signal.SIGSTOP)
            try:
                wait_for(lambda: run.state() == RunState.STALLED, timeout=60, what="stalled")
                seen["frozen"] = run.state()
            finally:
                rank1.send_signal(signal.SIGCONT)
            wait_for(lambda: run.state() == RunState.RUNNING, timeout=60, what="running again")
            seen["thawed"] = run.state()
            seen["stop_sent"] = runs.stop_run(run)  # status.json names the supervisor; it forwards the stop to every rank
            seen["exit"] = proc.wait(120)
            seen["after"] = run.state()
        finally:
            if proc.poll() is None:
                proc.kill()
    return run, seen


def test_a_hung_rank_shows_the_whole_run_stalled_and_running_again(hung_then_stopped):
    from loratui.core.protocol import RunState

    run, seen = hung_then_stopped
    assert seen["before"] == RunState.RUNNING
    assert seen["frozen"] == RunState.STALLED
    assert seen["thawed"] == RunState.RUNNING
    assert seen["stop_sent"] and seen["exit"] == 0  # and a run that hung once still stops as asked
    assert seen["after"] == "stopped"


def test_stop_reaches_every_rank_and_the_run_resumes(hung_then_stopped):
    run, seen = hung_then_stopped
    assert seen["stop_sent"] and seen["exit"] == 0 and seen["after"] == "stopped"
    stopped = events(run, "stopped")
    assert stopped and stopped[-1]["adapter"]
    step = stopped[-1]["step"]
    assert step >= 3
    import torch

    held = [torch.load(run.path / "ranks" / f"weights-rank-{r}.pt") for r in (0, 1)]
    assert held[0]["step"] == held[1]["step"] == step  # both ranks stopped at the same step
    assert run.latest_checkpoint().name == f"checkpoint-{step}"

    # resuming with another number of processes (one: `loratui engine RUN --resume`'s Engine, run in this process) is
    # refused, saying what to do, and harms nothing
    from loratui.train.engine import Engine

    assert Engine(run, resume=True, echo=lambda line: None).run() != 0
    assert "train.gpus: 2" in events(run, "failed")[-1]["hint"]
    assert run.latest_checkpoint().name == f"checkpoint-{step}"

    cfg = yaml.safe_load(run.config_path.read_text())
    cfg["train"]["max_steps"] = step + 3  # the resumed run trains on to its (now nearer) last step
    run.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert engine(run, 2, "--resume") == 0, run.log_path.read_text()[-3000:]
    assert run.state() == "finished"
    assert events(run, "resumed")[-1]["step"] == step
    assert events(run, "finished")[-1]["step"] == step + 3


def test_a_dead_rank_fails_the_run_naming_it(tmp_path, tiny_llama):
    run = make_run(tmp_path, tiny_llama, "dead", max_steps=200, save_steps=500, eval_steps=500)
    proc = engine(run, 2, wait=False)
    try:
        ranks = rank_pids(proc.pid)
        wait_for(lambda: any(e["step"] >= 1 for e in events(run, "step")), what="a training step")
        ranks[1].send_signal(signal.SIGKILL)
        rc = proc.wait(150)  # torchrun ends the other rank; nothing hangs
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc != 0
    assert run.state() == "failed"
    failed = events(run, "failed")[-1]
    assert "rank 1" in failed["message"], failed


def test_resume_on_another_number_of_cards_says_what_to_do(tmp_path, tiny_llama):
    from loratui.core.errors import RunError
    from loratui.train.distributed import World, check_resume_world

    with pytest.raises(RunError) as err:
        check_resume_world({"kind": "started", "world_size": 2}, World(size=1))
    assert err.value.field == "train.gpus" and "train.gpus: 2" in err.value.hint
    check_resume_world({"kind": "started", "world_size": 2}, World(rank=0, local_rank=0, size=2))


def test_device_plan_uses_exactly_the_chosen_cards():
    from loratui.core.config import RunConfig
    from loratui.core.errors import ConfigError

    cards = [GpuInfo(index=i, name="NVIDIA H100") for i in range(4)]

    def plan(**train):
        return plan_devices(RunConfig.model_validate({"train": {"batch_size": 16, **train}}), cards)

    assert plan().gpus == (0, 1, 2, 3) and plan().processes == 4 and plan().effective_batch == 64
    assert plan(gpus=2).env()["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert plan(gpus=[3, 1]).env() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "3,1"}
    one = plan(gpus=[2])
    assert one.processes == 1 and one.distributed == "none" and one.effective_batch == 16
    none = plan(distributed="none")
    assert none.gpus == (0,) and none.processes == 1 and none.notes  # said, not silent
    assert "= 128 a step" in plan(grad_accum=2).describe()
    with pytest.raises(ConfigError) as err:
        plan(gpus=6)
    assert err.value.field == "train.gpus"
    with pytest.raises(ConfigError):
        plan(gpus=[7])
    assert plan_devices(RunConfig(), []).processes == 1  # CPU


def test_two_nodes_rendezvous_and_train_as_one_run(tmp_path, tiny_llama):
    """Multi-node on one machine: two 'nodes' of one process each meet at a c10d rendezvous (gloo on CPU)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = make_run(tmp_path, tiny_llama, "nodes", nodes=2, rdzv_endpoint=f"127.0.0.1:{port}")
    # what `loratui train` prints for the other nodes names the same rendezvous and run folder
    from loratui.core.supervisor import other_node_command

    line = other_node_command(run, 1, 2, f"127.0.0.1:{port}")
    assert "--nnodes=2" in line and f"--rdzv-endpoint=127.0.0.1:{port}" in line and str(run.path) in line
    nodes = [engine(run, 1, wait=False) for _ in range(2)]
    assert [p.wait(240) for p in nodes] == [0, 0], run.log_path.read_text()[-3000:]
    assert len(events(run, "started")) == 1 and events(run, "started")[0]["world_size"] == 2
    assert events(run, "finished")[-1]["step"] == 6 and run.state() == "finished"


def test_the_failed_rank_is_the_one_that_died_not_the_one_that_noticed(tmp_path):
    """A rank killed by a signal writes no report; the survivor reports a broken connection. The event names the
    dead rank (torchrun's root cause), and otherwise the earliest report."""
    import json

    from loratui.core.supervisor import rank_failure

    run = runs.RunDir(tmp_path / "r")
    (run.path / "ranks").mkdir(parents=True)
    (run.path / "ranks" / "rank-0.json").write_text(json.dumps(
        {"rank": 0, "error": "RuntimeError", "message": "Connection reset by peer", "time": 10.0}))
    run.log_path.write_text("Failures:\n[1]:\n  time      : x\n  host      : localhost\n"
                            "  rank      : 1 (local_rank: 1)\n  exitcode  : -9 (pid: 42)\n")
    cause = rank_failure(run)
    assert cause["rank"] == 1 and "SIGKILL" in cause["message"]
    run.log_path.write_text("")
    (run.path / "ranks" / "rank-1.json").write_text(json.dumps(
        {"rank": 1, "error": "OutOfMemoryError", "message": "CUDA out of memory", "time": 9.0}))
    assert rank_failure(run)["rank"] == 1 and rank_failure(run)["error"] == "OutOfMemoryError"


def test_a_launch_pinned_to_one_card_starts_one_process(tmp_path, tiny_llama, monkeypatch):
    """The queue pins a run to a free card: the launcher plans among the pinned cards, not every visible one."""
    from loratui.core import gpu as gpu_mod

    cards = [GpuInfo(index=i, name="NVIDIA H100") for i in range(4)]
    from loratui.core import devices

    fake = lambda visible_only=True, env=...: cards  # noqa: E731
    monkeypatch.setattr(gpu_mod, "query_gpus", fake)
    monkeypatch.setattr(devices, "query_gpus", fake)
    run = make_run(tmp_path, tiny_llama, "pinned")
    started = []

    class FakePopen:
        def __init__(self, cmd, env=None, **kw):
            started.append((cmd, env))
            self.pid = os.getpid()

    monkeypatch.setattr(run_control.subprocess, "Popen", FakePopen)
    runs.launch_detached(run, env={"CUDA_VISIBLE_DEVICES": "2"})
    runs.launch_detached(run)
    (pinned_cmd, pinned_env), (all_cmd, all_env) = started
    assert "--nproc" not in pinned_cmd and pinned_env["CUDA_VISIBLE_DEVICES"] == "2"
    assert all_cmd[-2:] == ["--nproc", "4"] and all_env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_loratui_train_on_several_cards_goes_through_torchrun_never_one_process(tmp_path, tiny_llama, monkeypatch):
    """The defect this guards: with two cards visible, one process trained with DataParallel and a doubled batch."""
    from loratui.cli import main as cli_main
    from loratui.core import devices, supervisor
    from loratui.core.devices import DevicePlan
    from loratui.train import engine as engine_mod

    plan = DevicePlan(gpus=(0, 1), names=("H100", "H100"), processes=2, distributed="auto", per_device_batch=2)
    monkeypatch.setattr(devices, "plan_devices", lambda cfg, gpus=None: plan)
    calls = []
    monkeypatch.setattr(supervisor, "supervise", lambda run, n, **kw: calls.append((run.name, n)) or 0)
    monkeypatch.setattr(engine_mod.Engine, "run", lambda self: pytest.fail("trained in one process"))
    for var in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):  # the CLI sets them: restored after the test
        monkeypatch.setenv(var, "")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": str(tiny_llama)}, "data": {"source": "sample:text-sample.jsonl",
                                                                            "format": "text"},
                                   "output": {"runs_dir": str(tmp_path / "runs"), "name": "two"}}))
    assert cli_main(["train", str(cfg)]) == 0
    assert calls == [("two", 2)] and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
