"""Faults injected the way they happen (real signals, real processes, a real full disk, corrupted files) on tiny
random-init models; each test asserts that nothing was lost. See tests/FAULTS.md."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from loratui.cli import main as cli_main
from loratui.core import checkpoints as ck
from loratui.core import runs
from loratui.core.config import RunConfig


def make_run(tmp_path: Path, model_dir: Path, runs_dir: Path, name: str = "r1", **sections) -> runs.RunDir:
    data = {
        "model": {"name": str(model_dir)},
        "lora": {"r": 4, "alpha": 8},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 48,
                 "validation_fraction": 0.0, "max_length": 64},
        "train": {"max_steps": 6, "batch_size": 2, "lr": 1e-3, "logging_steps": 1, "save_steps": 2,
                  "eval_steps": None},
        "output": {"runs_dir": str(runs_dir), "name": name},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return runs.create_run(RunConfig.model_validate(data))


def set_max_steps(run: runs.RunDir, n: int) -> None:
    data = yaml.safe_load(run.config_path.read_text())
    data["train"]["max_steps"] = n
    run.config_path.write_text(yaml.safe_dump(data, sort_keys=False))


def wait(predicate, timeout=120.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def steps(run: runs.RunDir, after_kind: str | None = None) -> list[dict]:
    events = run.events()
    if after_kind:
        idx = max(i for i, e in enumerate(events) if e["kind"] == after_kind)
        events = events[idx:]
    return [e for e in events if e["kind"] == "step"]


def all_complete(run: runs.RunDir) -> None:
    names = sorted(p.name for p in run.checkpoints_dir.iterdir())
    assert not [n for n in names if n.startswith(".")], names  # no staging or half-deleted leftovers
    for p in run.checkpoints_dir.iterdir():
        assert ck.checkpoint_problem(p) is None, (p, ck.checkpoint_problem(p))


# -- 2: SIGKILL inside a checkpoint save, then --resume ---------------------------------------------------------

def test_kill_during_checkpoint_save_then_resume(tmp_path, tiny_llama, runs_dir):
    run = make_run(tmp_path, tiny_llama, runs_dir, train={"max_steps": 100000, "save_total_limit": 2})
    pid = runs.launch_detached(run, env={"LORATUI_TEST_SAVE_SLEEP": "4:60"})
    staged = run.checkpoints_dir / ".staging-checkpoint-4" / "checkpoint-4" / "adapter_model.safetensors"
    assert wait(lambda: staged.is_file() and "sleeping" in "".join(run.log_tail())), run.log_tail()
    os.kill(pid, signal.SIGKILL)  # inside the save of checkpoint-4: weights written, optimizer/state half there
    assert wait(lambda: run.state() == "crashed", 30)
    assert not (run.checkpoints_dir / "checkpoint-4").exists()  # never visible under its real name
    assert run.latest_checkpoint().name == "checkpoint-2"
    # and a checkpoint left half-written by an older loratui (no marker, truncated weights) is passed over
    bad = run.checkpoints_dir / "checkpoint-5"
    shutil.copytree(run.checkpoints_dir / "checkpoint-2", bad)
    (bad / ck.MARKER).unlink()
    weights = bad / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    set_max_steps(run, 6)
    assert cli_main(["train", "--resume", str(run.path)]) == 0
    resumed = [e for e in run.events() if e["kind"] == "resumed"][-1]
    assert resumed["step"] == 2
    assert [Path(s["path"]).name for s in resumed["skipped"]] == ["checkpoint-5"]
    assert "truncated" in resumed["skipped"][0]["reason"]
    later = [e["step"] for e in steps(run, "resumed")]
    assert later == [3, 4, 5, 6]
    assert run.state() == "finished"
    all_complete(run)  # staging of the killed save cleaned, checkpoint-5 rotated away, the rest whole
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert ck.weights_problem(run.adapter_dir) is None


def test_rotation_kill_leaves_no_checkpoint_without_weights(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        d = root / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "trainer_state.json").write_text("{}")
        (d / "adapter_model.safetensors").write_bytes(_tiny_safetensors())
        (d / "optimizer.pt").write_bytes(b"x" * 100)
        ck.write_marker(d)

    def killed_half_way(path, *a, **kw):  # the process dies after deleting one file of the folder
        next(p for p in Path(path).iterdir() if p.name == "adapter_model.safetensors").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(ck.shutil, "rmtree", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        ck.rotate(root, keep=2)
    monkeypatch.undo()
    visible = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
    assert visible == ["checkpoint-4", "checkpoint-6"]  # the half-deleted one is out of sight
    assert all(ck.checkpoint_problem(root / n) is None for n in visible)
    ck.clean_leftovers(root)
    assert sorted(p.name for p in root.iterdir()) == visible


def _tiny_safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return len(header).to_bytes(8, "little") + header + b"\0" * 8


# -- 3: resuming a run that reached its last step ---------------------------------------------------------------

def test_resume_at_last_step_never_trains_past_max_steps(tmp_path, tiny_llama, runs_dir):
    from loratui.train.engine import Engine

    run = make_run(tmp_path, tiny_llama, runs_dir, train={"max_steps": 4, "save_steps": 2})
    assert Engine(run, echo=lambda line: None).run() == 0
    first = {e["step"]: e["lr"] for e in steps(run)}
    adapter = (run.adapter_dir / "adapter_model.safetensors").read_bytes()
    run.write_status(state="stopped")  # a stop that landed on the last step
    assert Engine(run, resume=True, echo=lambda line: None).run() == 0
    assert steps(run, "resumed") == []  # nothing past 4/4
    finished = [e for e in run.events() if e["kind"] == "finished"][-1]
    assert finished["step"] == 4
    assert (run.adapter_dir / "adapter_model.safetensors").read_bytes() == adapter
    # resumed from the middle: the schedule continues where it was, and ends at max_steps
    shutil.rmtree(run.checkpoints_dir / "checkpoint-4")
    run.write_status(state="stopped")
    assert Engine(run, resume=True, echo=lambda line: None).run() == 0
    later = steps(run, "resumed")
    assert [e["step"] for e in later] == [3, 4]
    assert [e["lr"] for e in later] == pytest.approx([first[3], first[4]])


def test_a_resume_before_the_first_checkpoint_trains_again_from_step_0(tmp_path, tiny_llama, runs_dir, monkeypatch):
    """Runs' resume said 'from step 0 (it has no checkpoint yet)' and the engine then failed with 'no complete
    checkpoint to resume from' (a QA walk, after a kill at step 3 of a run saving at 30). It trains again from 0,
    and the steps of the first part are the ones trained again (one fold: the run's figures are the new part's)."""
    from loratui.core.fold import RunFold
    from loratui.train.engine import Engine

    run = make_run(tmp_path, tiny_llama, runs_dir, train={"max_steps": 4, "save_steps": 100})
    monkeypatch.setenv("LORATUI_TEST_OOM_AT_STEP", "3")  # the first part ends at step 3, before any checkpoint
    assert Engine(run, echo=lambda line: None).run() != 0
    assert [e["step"] for e in steps(run)] == [1, 2]
    assert not run.checkpoints_dir.exists() or not any(run.checkpoints_dir.iterdir())
    monkeypatch.delenv("LORATUI_TEST_OOM_AT_STEP")
    run.write_status(state="crashed")
    lines: list[str] = []
    assert Engine(run, resume=True, echo=lines.append).run() == 0
    resumed = [e for e in run.events() if e["kind"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["step"] == 0 and resumed[0]["checkpoint"] is None
    assert [e["step"] for e in steps(run, "resumed")] == [1, 2, 3, 4]
    assert "no checkpoint to resume from: training again from step 0" in lines
    fold = RunFold()
    for ev in run.events():
        fold.add(ev)
    view = fold.summary(events_only=True)
    assert view.state == "finished" and view.step == 4 and [s for s, _ in fold.history.losses] == [1, 2, 3, 4]
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()


def test_resume_at_last_step_of_an_epoch_based_run(tmp_path, tiny_llama, runs_dir):
    from loratui.train.engine import Engine

    run = make_run(tmp_path, tiny_llama, runs_dir, data={"max_samples": 8, "max_length": 128},
                   train={"max_steps": None, "epochs": 1, "save_steps": 2})
    assert Engine(run, echo=lambda line: None).run() == 0
    last = max(e["step"] for e in steps(run))
    run.write_status(state="stopped")
    assert Engine(run, resume=True, echo=lambda line: None).run() == 0
    assert steps(run, "resumed") == []
    assert [e for e in run.events() if e["kind"] == "finished"][-1]["step"] == last


# -- 4: a second SIGTERM during the graceful save -----------------------------------------------------------------

def test_second_sigterm_during_the_stop_save_is_ignored(tmp_path, tiny_llama, runs_dir):
    run = make_run(tmp_path, tiny_llama, runs_dir, train={"max_steps": 100000, "save_steps": 100000})
    pid = runs.launch_detached(run, env={"LORATUI_TEST_SAVE_SLEEP": "*:1"})  # 1 s naps: 20 of the test's 0.05 s polls
    assert wait(lambda: len(steps(run)) >= 3), run.log_tail()
    assert runs.stop_run(run)
    assert wait(lambda: any(p.name.startswith(".staging-") for p in run.checkpoints_dir.glob("*"))
                if run.checkpoints_dir.is_dir() else False), run.log_tail()
    os.kill(pid, signal.SIGTERM)  # the impatient user, while the checkpoint is being written
    os.kill(pid, signal.SIGINT)
    assert wait(lambda: (run.path / ".adapter.partial").exists() or run.state() != "running", 60)
    if run.state() == "running":
        os.kill(pid, signal.SIGTERM)  # and again while the adapter is being written
    assert runs.wait_for_state(run, timeout=120) == "stopped"
    stopped = [e for e in run.events() if e["kind"] == "stopped"][-1]
    assert stopped["adapter"] and stopped["checkpoint"]
    assert "before training began" not in stopped["message"]
    assert ck.checkpoint_problem(Path(stopped["checkpoint"])) is None
    assert ck.weights_problem(run.adapter_dir) is None
    log = "\n".join(run.log_tail(200))
    assert "SIGTERM again: ignored" in log and "SIGINT again: ignored" in log


# -- 6: disk full while saving (a real full tmpfs) ----------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the ENOSPC hook test covers it")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_saving_then_resume_after_freeing_space(tmp_path, tiny_llama, small_disk, capsys):
    cfg = make_run(tmp_path, tiny_llama, tmp_path / "scratch").config()
    cfg.output.runs_dir = str(small_disk)
    cfg.train.max_steps, cfg.train.save_steps = 4, 2
    cfg_path = cfg.save(tmp_path / "cfg.yaml")
    # a checkpoint is ~3.6 MB (tokenizer included): checkpoint-2 fits in 6 MB, checkpoint-4 does not
    code = cli_main(["train", str(cfg_path)])  # the foreground run, in this process (no second torch import)
    out = "".join(capsys.readouterr())
    run = runs.RunDir(small_disk / "r1")
    assert code == 1, out
    assert "Traceback" not in out
    line = next(ln for ln in out.splitlines() if ln.startswith("failed: "))
    print(line)
    assert "disk full while saving checkpoint-4 in " + str(run.checkpoints_dir) in line and "free at least" in line
    assert run.state() == "failed"  # not left 'running'
    failed = [e for e in run.events() if e["kind"] == "failed"][-1]
    assert failed["error"] == "DiskFullError"
    assert sorted(p.name for p in run.path.iterdir() if p.name.startswith(".")) == []  # no temp status file
    all_complete(run)
    assert [p.name for p in run.checkpoints_dir.iterdir()] == ["checkpoint-2"]
    # free space (grow the disk), then resume: it continues from checkpoint-2
    subprocess.run(["mount", "-o", "remount,size=24m", str(small_disk)], check=True)
    assert cli_main(["train", "--resume", str(run.path)]) == 0  # in this process: no second torch import
    assert [e["step"] for e in steps(run, "resumed")] == [3, 4]
    assert run.state() == "finished"
    all_complete(run)


def test_enospc_hook_in_final_adapter_keeps_checkpoints(tmp_path, tiny_llama, runs_dir, monkeypatch):
    """Where no tmpfs can be mounted: an injected ENOSPC at the same place gives the same outcome."""
    from loratui.train.engine import Engine

    run = make_run(tmp_path, tiny_llama, runs_dir, train={"max_steps": 2, "save_steps": 2})
    monkeypatch.setenv("LORATUI_TEST_ENOSPC", "2")
    lines = []
    assert Engine(run, echo=lines.append).run() == 1
    assert any(ln.startswith("failed: disk: disk full while saving checkpoint-2") for ln in lines), lines
    assert run.state() == "failed"
    assert list(run.checkpoints_dir.iterdir()) == []


# -- 11: train.seed reproduces a run ------------------------------------------------------------------------------

def test_same_config_same_seed_gives_identical_runs(tmp_path, tiny_bert, runs_dir):
    from loratui.train.engine import Engine

    def losses(name):
        run = make_run(tmp_path, tiny_bert, runs_dir, name=name, model={"task": "seq-cls", "num_labels": 2},
                       lora={"preset": "bert-qv", "dropout": 0.1},
                       data={"source": "sample:sentiment.csv", "format": "classification", "max_samples": 40,
                             "validation_fraction": 0.25, "max_length": 32},
                       train={"max_steps": 3, "eval_steps": 3, "save_steps": 100, "seed": 7})
        assert Engine(run, echo=lambda line: None).run() == 0
        return [(e["kind"], e.get("loss"), e.get("eval_loss")) for e in run.events() if e["kind"] in ("step", "eval")]

    a, b = losses("a"), losses("b")
    assert len(a) >= 4 and a == b


# -- out of memory mid-run -----------------------------------------------------------------------------------------

def test_out_of_memory_fails_with_step_and_batch_then_retry(tmp_path, tiny_llama, runs_dir, monkeypatch):
    from loratui.train.engine import Engine

    run = make_run(tmp_path, tiny_llama, runs_dir, train={"max_steps": 4, "save_steps": 2, "batch_size": 4})
    monkeypatch.setenv("LORATUI_TEST_OOM_AT_STEP", "3")
    # the engine `loratui engine RUN` runs, in this process (no second torch import); the retry below is detached
    assert Engine(run, echo=lambda line: None).run() == 1
    monkeypatch.delenv("LORATUI_TEST_OOM_AT_STEP")
    failed = [e for e in run.events() if e["kind"] == "failed"][-1]
    assert failed["oom"] is True and failed["oom_step"] == 3
    assert "out of GPU memory at step 3" in failed["message"] and failed["batch_shape"]["input_ids"][0] == 4
    assert run.state() == "failed"
    assert run.latest_checkpoint().name == "checkpoint-2"
    all_complete(run)
    # the one-key retry: half the micro-batch, twice the accumulation, from checkpoint-2
    from loratui.core.retry import retry_after_oom

    pid = retry_after_oom(run)
    assert pid > 0
    cfg = run.config()
    assert (cfg.train.batch_size, cfg.train.grad_accum) == (2, 2)
    assert runs.wait_for_state(run, timeout=180) == "finished", run.log_tail()
    resumed = [e for e in run.events() if e["kind"] == "resumed"][-1]
    assert resumed["step"] == 2
    assert [e["step"] for e in steps(run, "resumed")] == [3, 4]


def test_halved_batch_keeps_the_effective_batch():
    from loratui.core.errors import RunError
    from loratui.core.retry import halved_batch

    assert halved_batch(8, 1) == (4, 2)
    assert halved_batch(64, 4) == (32, 8)
    assert halved_batch(3, 1) == (1, 3)  # odd: accumulation rounds up, never a smaller effective batch
    with pytest.raises(RunError, match="train.batch_size"):
        halved_batch(1, 8)


# -- a stop that comes once every step is trained ------------------------------------------------------------------

def test_a_stop_during_the_final_evaluation_leaves_a_finished_run(tmp_path, tiny_llama, runs_dir, monkeypatch):
    """Nothing is left to resume once every step is trained: a stop asked during the final evaluation (a QA walk:
    'stopped at step 8' at 8/8, and the resume only evaluated again) ends the run finished, its adapter saved."""
    from loratui.train.engine import Engine

    run = make_run(tmp_path, tiny_llama, runs_dir, data={"validation_fraction": 0.25, "max_length": 256, "eval_samples": 4},
                   train={"max_steps": 3, "save_steps": 100, "eval_steps": 2})
    final_eval = Engine._final_eval

    def stop_asked_meanwhile(self, trainer):
        self.stop_request.stop, self.stop_request.signal_name = True, "SIGTERM"  # as the signal handler sets them
        final_eval(self, trainer)

    monkeypatch.setattr(Engine, "_final_eval", stop_asked_meanwhile)
    assert Engine(run, echo=lambda line: None).run() == 0
    assert run.state() == "finished" and runs.summarize(run).state == "finished"
    kinds = [e["kind"] for e in run.events()]
    assert "finished" in kinds and "stopped" not in kinds
    assert any(e["kind"] == "eval" and e.get("final") for e in run.events())  # the evaluation ran whole
    assert ck.weights_problem(run.adapter_dir) is None
