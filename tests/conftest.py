"""Shared fixtures: tiny random models of real architectures (Llama, GPT-2, BERT) saved to disk, and helpers.

Heavy imports happen inside fixtures so UI tests never pay for torch.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def procs():
    """Processes a test starts (stand-in engines, strangers): killed and reaped when it ends."""
    import subprocess

    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture(autouse=True)
def _recorded_runs_are_not_stalled(request, monkeypatch):
    """Recorded run folders replay events from January at a live stand-in's pid: only the watchdog's own tests
    (and the processes they start) judge silence."""
    if not request.module.__name__.rsplit(".", 1)[-1].startswith("test_watchdog"):
        from loratui.core import fold

        monkeypatch.setattr(fold, "STALL_MIN_S", 1e12)


# The cyclic garbage collector's full passes walk every tracked object: with textual, torch and transformers imported
# that is most of a million, about 0.3 s a pass, and the app tests' widgets set a pass off every few seconds (measured:
# a fifth of the suite's time). Full passes come 10x less often (young objects are still collected as before), and
# what imports leave behind is frozen out of their sight below.
gc.set_threshold(700, 10, 100)
_MODULES_AT_FREEZE = [0]


@pytest.fixture(autouse=True)
def _imports_out_of_the_collectors_way():
    """After a test that imported a library (50 modules or more), a full collection, then gc.freeze(): the objects
    alive then (modules, session fixtures) are no longer walked by later passes. No garbage is frozen; objects freed
    by their reference count are freed as before."""
    yield
    if len(sys.modules) - _MODULES_AT_FREEZE[0] >= 50:
        gc.collect()
        gc.freeze()
        _MODULES_AT_FREEZE[0] = len(sys.modules)


@pytest.fixture(autouse=True)
def _release_run_locks():
    """A test that stood in for an engine (held a run's lock) lets go of it when it ends."""
    yield
    from loratui.core import identity

    for lock in list(identity._HELD.values()):
        lock.release()


@pytest.fixture(autouse=True)
def _helper_usable_again():
    """A test that ran the app's exit path (run_app's finally, as `loratui` leaves) closed the Setup helper for good
    in this process; the next test starts as a fresh app would, with the helper closed no longer (the suite's
    order, or a parallel worker's share of it, decides which tests come after)."""
    yield
    offload = sys.modules.get("loratui.ui.offload")
    if offload is not None and offload._closed:
        offload.shutdown()
        offload._closed = False


@pytest.fixture(scope="session")
def smol_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once from GGUF to a cached safetensors folder."""
    from loratui.core.config import ModelSection
    from loratui.train.models import resolve_model

    return Path(resolve_model(ModelSection(name="smollm2-135m-instruct")).path)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from loratui.core.config import ModelSection
    from loratui.train.models import resolve_model

    return Path(resolve_model(ModelSection(name="minilm-l6-v2")).path)


def _save_tokenizer(src: Path, dst: Path, drop_chat_template: bool = False) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(src))
    if drop_chat_template:
        tok.chat_template = None
    tok.save_pretrained(str(dst))
    tpl = dst / "chat_template.jinja"
    if drop_chat_template and tpl.exists():
        tpl.unlink()


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smol_dir) -> Path:
    """Random-init Llama shape with the SmolLM2 tokenizer (chat template included)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    _save_tokenizer(smol_dir, out)
    return out


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, smol_dir) -> Path:
    """Random-init GPT-2 shape (Conv1D layers), tokenizer without a chat template (Alpaca prompt path)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=49152, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=1,
                     eos_token_id=2)
    GPT2LMHeadModel(cfg).save_pretrained(str(out))
    _save_tokenizer(smol_dir, out, drop_chat_template=True)
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, minilm_dir) -> Path:
    """Random-init BERT shape with the MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(str(out))
    _save_tokenizer(minilm_dir, out)
    return out


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    d = tmp_path / "runs"
    d.mkdir()
    return d


# -- UI tests on recorded run folders ------------------------------------------------------------------------------

@pytest.fixture
def utc(monkeypatch):
    """Times on screen in UTC, so snapshots match anywhere."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    time.tzset()


@pytest.fixture
def quiet_monitor(monkeypatch):
    """The monitor polls fast and sees a fixed 'no GPU' panel."""
    from fixtures import FixedSampler, no_gpu_snapshot
    from loratui.ui.screens import monitor

    monkeypatch.setattr(monitor, "POLL_INTERVAL", 0.02)
    monkeypatch.setattr(monitor, "make_sampler", lambda pid: FixedSampler(no_gpu_snapshot()))


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """The recorded run folders (tests/fixtures/runs) copied to ./runs of a fresh working folder."""
    from fixtures import copy_runs

    monkeypatch.chdir(tmp_path)
    copy_runs(tmp_path)
    return Path("runs")


BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory, smol_dir):
    """The bench's data file and a builder of its model folders (config + SmolLM2 tokenizer, no weights)."""
    import sys

    sys.path.insert(0, str(BENCH))
    from gpu_engine import SHAPES, make_data
    from transformers import AutoTokenizer, LlamaConfig

    work = tmp_path_factory.mktemp("bench-shapes")
    make_data(work / "data.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(str(smol_dir))

    def model_dir(shape):
        d = work / f"llama-{shape}"
        if not (d / "config.json").is_file():
            LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                        pad_token_id=2, tie_word_embeddings=False).save_pretrained(str(d))
            tokenizer.save_pretrained(str(d))
        return d

    return work, model_dir


@pytest.fixture
def h200(monkeypatch):
    """speed.resolve as it ran on the H200: varlen attention and Liger kernels available."""
    from loratui.train import speed

    monkeypatch.setattr(speed, "varlen_available", lambda cuda: cuda)
    monkeypatch.setattr(speed, "liger_available", lambda cuda: cuda)
    # Liger patches the model types it lists, llama among them, and no model of unknown type: a check that forgets to
    # pass the model's type reads Liger off, as on the GPU (the fit never chose wide loss chunks there, rounds 13-15)
    monkeypatch.setattr(speed, "liger_supports", lambda model_type: model_type == "llama")


@pytest.fixture(scope="session")
def detached_stalled_then_stopped(tmp_path_factory, tiny_llama):
    """One detached engine (its own session, as the app and `loratui train --detach` start it) for two tests, since a
    launch costs a torch import: it trains, is frozen (SIGSTOP) until the run reads 'stalled' (and `loratui runs`
    says so), thawed until it reads 'running' again and has 5 steps, then stopped gracefully. What was seen on the way
    is recorded; the run folder is left as the stop left it (test_engine's resume test then resumes it)."""
    import contextlib
    import io
    import signal
    import time

    from loratui.cli import main as cli_main
    from loratui.core import fold, runs
    from loratui.core.config import RunConfig
    from loratui.core.protocol import RunState

    def wait(predicate, timeout):
        end = time.monotonic() + timeout
        while not predicate() and time.monotonic() < end:
            time.sleep(0.1)
        return predicate()

    def steps():
        return sum(e["kind"] == "step" for e in run.events())

    runs_dir = tmp_path_factory.mktemp("detached") / "runs"
    run = runs.create_run(RunConfig.model_validate({
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4, "alpha": 8},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "validation_fraction": 0.0,
                 "max_length": 96},
        "train": {"max_steps": 100000, "batch_size": 2, "lr": 1e-3, "logging_steps": 1, "save_steps": 100000,
                  "eval_steps": None},
        "output": {"runs_dir": str(runs_dir), "name": "detached"}}))
    seen = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fold, "STALL_MIN_S", 2.0)
        mp.setattr(fold, "STALL_FACTOR", 3.0)
        pid = runs.launch_detached(run)
        try:
            seen["own_session"] = os.getpgid(pid) == pid  # survives the app and an SSH hangup
            seen["three_steps"] = wait(lambda: steps() >= 3, 120)
            seen["before"] = run.state()
            os.kill(pid, signal.SIGSTOP)  # a hung collective, a stuck loader, a frozen filesystem look the same
            wait(lambda: run.state() == RunState.STALLED, 30)
            seen["frozen"] = run.state()
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                seen["runs_code"] = cli_main(["runs", "--runs-dir", str(runs_dir)])
            seen["runs_out"] = out.getvalue()
            os.kill(pid, signal.SIGCONT)
            wait(lambda: run.state() == RunState.RUNNING, 30)
            seen["thawed"] = run.state()
            seen["five_steps"] = wait(lambda: steps() >= 5, 120)
        finally:
            os.kill(pid, signal.SIGCONT)
            seen["stop_sent"] = runs.stop_run(run)
        seen["after"] = runs.wait_for_state(run, timeout=120)
    seen["log"] = "\n".join(run.log_tail())
    return run, seen
