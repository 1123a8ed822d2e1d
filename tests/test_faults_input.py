"""Hostile input: config values that must never load, files that are not configs, pickle weights, truncated
adapters, a killed merge's leftovers. Each ends in one line naming the field, never a traceback. See tests/FAULTS.md."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loratui.cli import main as cli_main
from loratui.core import checkpoints as ck
from loratui.core.config import MAX_LORA_R, RunConfig, config_from_dict, load_config
from loratui.core.errors import ConfigError, LoratuiError

# -- 7: values that should never load ------------------------------------------------------------------------------

@pytest.mark.parametrize("section, key, value", [
    ("lora", "alpha", float("nan")), ("lora", "alpha", float("inf")), ("train", "lr", float("nan")),
    ("train", "lr", float("inf")), ("train", "epochs", float("nan")), ("train", "epochs", float("inf")),
    ("lora", "dropout", float("nan")), ("train", "weight_decay", float("inf")),
])
def test_nan_and_infinity_are_refused(tmp_path, section, key, value):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({section: {key: value}}))  # written as .nan / .inf, as a user would
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    line = str(exc.value)
    assert line.startswith(f"{section}.{key}: ") and "\n" not in line and "finite" in line


def test_lora_rank_has_an_upper_bound():
    with pytest.raises(ConfigError, match=r"^lora\.r: must be at most 4096, got 8000"):
        config_from_dict({"lora": {"r": 8000}})
    assert config_from_dict({"lora": {"r": MAX_LORA_R}}).lora.r == MAX_LORA_R


def test_hostile_files_give_one_line(tmp_path):
    def err(content: bytes) -> str:
        path = tmp_path / "c.yaml"
        path.write_bytes(content)
        with pytest.raises(ConfigError) as exc:
            load_config(path)
        line = str(exc.value)
        assert "\n" not in line and len(line) < 600, line
        return line

    assert "not UTF-8" in err(b"model:\n  name: caf\xe9\n")
    assert "nested too deeply" in err(b"[" * 20000 + b"]" * 20000) or "not valid YAML" in err(b"[" * 20000)
    assert "train.max_steps" in err(b"train:\n  max_steps: 1" + b"0" * 30 + b"\n")
    assert "cannot be read" in err(b"train:\n  max_steps: " + b"9" * 5000 + b"\n")  # past int's digit limit
    assert "train.seed" in err(b"train:\n  seed: -1\n")
    line = err(("model:\n  name: " + "x" * 100_000 + "\n").encode())
    assert line.startswith("model.name: is 100000 characters long")
    line = err(("output:\n  name: " + "y" * 100_000 + "\n").encode())
    assert line.startswith("output.name: ")
    with pytest.raises(ConfigError) as exc:  # (YAML itself refuses keys over 1024 characters)
        config_from_dict({"lora": {"k" * 100_000: 1}})
    line = str(exc.value)
    assert "unknown key" in line and "100000 chars" in line and len(line) < 400
    line = err(("method:\n  kind: " + "z" * 3000 + "\n").encode())
    assert line.startswith("method.kind: ") and "(3002 chars) is not allowed" in line


# property-based: any mapping shaped like a config, with any values, loads or fails in one line naming a field
_keys = st.sampled_from(["model", "method", "lora", "data", "train", "output", "name", "r", "alpha", "lr", "epochs",
                         "max_steps", "batch_size", "seed", "task", "kind", "dropout", "target_modules",
                         "source", "max_length", "num_labels", "x" * 300])
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=50), st.text(min_size=4000, max_size=5000),
    st.sampled_from(["lora", "qlora", "causal-lm", "seq-cls", "all-linear", "cosine", "nan", "1e999"]))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
                       max_leaves=12)
_configs = st.dictionaries(
    st.sampled_from(["model", "method", "lora", "data", "train", "output", "extra"]),
    st.dictionaries(_keys, _values, max_size=5) | _values, max_size=6)


def _check_loaded(cfg: RunConfig) -> None:
    for section in (cfg.lora, cfg.train, cfg.data):
        for value in section.model_dump().values():
            if isinstance(value, float):
                assert math.isfinite(value)
    assert 0 < cfg.lora.r <= MAX_LORA_R
    again = config_from_dict(yaml.safe_load(cfg.full_yaml()))
    assert again == cfg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_configs)
def test_fuzz_config_dicts_load_or_fail_in_one_line(data):
    from loratui.core.config_draft import draft_from_dict

    draft = draft_from_dict(data)  # what Setup opens to fix: a valid config and the values taken out, or nothing
    try:
        cfg = config_from_dict(data)
    except ConfigError as err:
        line = str(err)
        assert "\n" not in line and 0 < len(line) < 700, line
        assert ":" in line  # names the field (or "config")
        if draft is not None:
            _check_loaded(draft.config)
            assert draft.bad or draft.unknown, line  # a file that fails has something taken out
            assert all(len(m) < 700 and "\n" not in m for m in draft.messages.values())
        return
    _check_loaded(cfg)
    assert draft is not None and draft.config == cfg and not draft.bad and not draft.unknown


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=400), _configs.map(lambda d: yaml.safe_dump(d).encode())))
def test_fuzz_config_files_load_or_fail_in_one_line(tmp_path, raw):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(raw)
    try:
        cfg = load_config(path)
    except ConfigError as err:
        line = str(err)
        assert "\n" not in line and 0 < len(line) < 700, line
        return
    _check_loaded(cfg)


# -- 7: the estimate never allocates real weights ------------------------------------------------------------------

def test_estimate_builds_lora_on_the_meta_device(tiny_llama):
    from loratui.train import estimate, models

    cfg = config_from_dict({"model": {"name": str(tiny_llama)}, "lora": {"r": MAX_LORA_R,
                                                                         "target_modules": "all-linear"}})
    t0 = time.monotonic()
    wrapped, trainable, _ = estimate._meta_trainable(cfg, models.build_meta_model(cfg))
    assert time.monotonic() - t0 < 20
    assert trainable > 0
    assert {p.device.type for p in wrapped.parameters()} == {"meta"}  # no real tensor, LoRA matrices included


@pytest.mark.parametrize("name, expect", [
    ("/" + "n" * 3000, "model.name: cannot use"),  # a path component the file system refuses
    ("bad\x00name/x", "model.name: "),
])
def test_estimate_on_hostile_names_is_one_line(tmp_path, capsys, name, expect):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": name}}))
    assert cli_main(["estimate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: " + expect) and "\n" not in err and len(err) < 400


# -- 9: pickle weights need an explicit opt-in --------------------------------------------------------------------

def _as_pickle_model(src: Path, dst: Path) -> Path:
    import torch
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    (dst / "model.safetensors").unlink()
    torch.save(state, dst / "pytorch_model.bin")
    return dst


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/loratui-pwned",))


def test_pickle_only_model_needs_opt_in_and_malicious_pickle_is_one_line(tmp_path, tiny_llama, capsys):
    from loratui.core.errors import ModelError
    from loratui.train import models

    folder = _as_pickle_model(tiny_llama, tmp_path / "pickled")
    cfg = config_from_dict({"model": {"name": str(folder)}})
    resolved = models.resolve_model(cfg.model)
    with pytest.raises(ModelError) as exc:
        models.load_model(cfg, resolved, "fp32")
    line = str(exc.value)
    assert line.startswith("model.name: ") and "pickle" in line and "allow_pickle" in line and "--allow-pickle" in line
    cfg.model.allow_pickle = True
    assert models.load_model(cfg, resolved, "fp32") is not None  # with the opt-in it loads
    # a malicious pickle: refused by the safe loader, reported in one line, nothing run
    evil = tmp_path / "evil"
    shutil.copytree(folder, evil)
    with open(evil / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"model.embed_tokens.weight": _Evil()}, fh)
    with pytest.raises(ModelError) as exc:
        models.load_model(cfg.model_copy(update={"model": cfg.model.model_copy(update={"name": str(evil)})}),
                          models.resolve_model(cfg.model.model_copy(update={"name": str(evil)})), "fp32")
    assert "may be malicious" in str(exc.value) and "\n" not in str(exc.value)
    assert not Path("/tmp/loratui-pwned").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama) -> Path:
    """One step of a tiny LoRA run, trained once for the tests here; each test works on its own copy."""
    from loratui.core import runs
    from loratui.train.engine import Engine

    cfg = RunConfig.model_validate({
        "model": {"name": str(tiny_llama)}, "lora": {"r": 4, "alpha": 8},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 8,
                 "validation_fraction": 0.0, "max_length": 96},
        "train": {"max_steps": 1, "batch_size": 2, "save_steps": 100, "logging_steps": 1},
        "output": {"runs_dir": str(tmp_path_factory.mktemp("trained") / "runs"), "name": "a1"}})
    run = runs.create_run(cfg)
    assert Engine(run, echo=lambda line: None).run() == 0
    return run.path


def _train_adapter(tmp_path: Path, trained_run: Path) -> Path:
    """This test's copy of the trained run (tests cut and rewrite its files); returns its adapter folder."""
    from loratui.core import runs

    copy = tmp_path / "runs" / trained_run.name
    shutil.copytree(trained_run, copy)
    return runs.RunDir(copy).adapter_dir


def test_pickle_adapter_and_truncated_adapter(tmp_path, trained_run, capsys):
    import torch
    from safetensors.torch import load_file

    from loratui.core.adapters import read_adapter

    adapter = _train_adapter(tmp_path, trained_run)
    capsys.readouterr()  # the training's progress bars
    assert read_adapter(adapter).incomplete is None
    # pickle-only adapter: refused without the flag, loads with it
    pickled = tmp_path / "pickled-adapter"
    shutil.copytree(adapter, pickled)
    torch.save(load_file(str(pickled / "adapter_model.safetensors")), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    (pickled / ck.MARKER).unlink()
    assert cli_main(["generate", str(pickled), "hello", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: adapter: ") and "pickle" in err and "--allow-pickle" in err and "\n" not in err
    assert cli_main(["generate", str(pickled), "hello", "--max-new-tokens", "2", "--allow-pickle"]) == 0
    capsys.readouterr()
    from loratui.core.errors import LoratuiError as Refused
    from loratui.train.playground_worker import Playground

    with pytest.raises(Refused, match="pickle"):  # the Playground too (its loop reports it as one error line)
        Playground(lambda *a, **k: None).load(str(pickled), device="cpu")
    # 12: a truncated adapter is marked incomplete in Adapters, and generate on it is one line
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    info = read_adapter(adapter)
    assert info.incomplete and "adapter_model.safetensors" in info.incomplete and info.error.startswith("incomplete")
    assert cli_main(["generate", str(adapter), "hello"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: adapter: the adapter in") and "incomplete" in err and "\n" not in err


# -- 12: merge cleans a killed merge's .partial folders ---------------------------------------------------------

def test_merge_cleans_partials_left_by_a_killed_merge(tmp_path, trained_run):
    adapter = _train_adapter(tmp_path, trained_run)
    out = tmp_path / "merged"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    # a real merge process, killed while it writes its output
    code = ("import sys, os, signal, transformers\n"
            "from loratui.train import merge\n"
            "orig = transformers.PreTrainedModel.save_pretrained\n"
            "def save(self, path, *a, **k):\n"
            "    orig(self, path, *a, **k)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "transformers.PreTrainedModel.save_pretrained = save\n"
            f"merge.merge_adapter({str(adapter)!r}, {str(out)!r}, dtype='fp32')\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    partials = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert len(partials) == 1 and not out.exists()
    from loratui.train.merge import merge_adapter

    result = merge_adapter(adapter, out, dtype="fp32")
    assert result["max_diff"] < 1e-3
    assert [p for p in tmp_path.iterdir() if ".partial-" in p.name] == []


# the estimate on fuzzed (valid) configs of a real tiny model: a number or one line naming the field, never a traceback
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(r=st.integers(1, MAX_LORA_R), alpha=st.floats(0.001, 1e6),
       targets=st.one_of(st.none(), st.just("all-linear"), st.lists(st.sampled_from(
           ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "lm_head", "embed_tokens", "query", "x", ""]),
           max_size=4)),
       preset=st.one_of(st.none(), st.sampled_from(["llama-all", "minimal-qv", "gpt2", "bert-qv", "nope"])),
       kind=st.sampled_from(["lora", "qlora", "lora-8bit", "full"]),
       max_length=st.integers(8, 10_000_000), batch=st.integers(1, 1_000_000), accum=st.integers(1, 1000),
       gc=st.booleans(), rslora=st.booleans(), dora=st.booleans())
def test_fuzz_estimate_is_a_number_or_one_line(tiny_llama, r, alpha, targets, preset, kind, max_length, batch,
                                                accum, gc, rslora, dora):
    from loratui.train.estimate import count_params, estimate_memory

    try:
        cfg = config_from_dict({
            "model": {"name": str(tiny_llama)}, "method": {"kind": kind},
            "lora": {"r": r, "alpha": alpha, "target_modules": targets, "preset": preset, "rslora": rslora,
                     "dora": dora},
            "data": {"max_length": max_length},
            "train": {"batch_size": batch, "grad_accum": accum, "gradient_checkpointing": gc}})
        counts = count_params(cfg)
        report = estimate_memory(cfg)
    except LoratuiError as err:
        line = str(err)
        assert "\n" not in line and len(line) < 700 and ":" in line, line
        return
    assert counts.trainable >= 0 and report.rows and all(math.isfinite(row.total) for row in report.rows)


# -- issue 15 round 2, items 5 and 9: merge onto a malicious base, merge into a link to an empty folder ------------

def test_merge_onto_a_malicious_pickle_base_and_into_a_linked_folder(tmp_path, tiny_llama, trained_run, capsys):
    adapter = _train_adapter(tmp_path, trained_run)
    capsys.readouterr()  # the training's own output
    evil = tmp_path / "evil-base"
    shutil.copytree(tiny_llama, evil)
    (evil / "model.safetensors").unlink()
    with open(evil / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"model.embed_tokens.weight": _Evil()}, fh)
    assert cli_main(["merge", str(adapter), str(tmp_path / "m1"), "--base", str(evil), "--allow-pickle"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: base: ") and "malicious" in err and "\n" not in err, err
    assert not Path("/tmp/loratui-pwned").exists() and not (tmp_path / "m1").exists()
    # a link to an empty folder: the merge lands in the folder the link points to
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    assert cli_main(["merge", str(adapter), str(link), "--dtype", "fp32"]) == 0
    assert (target / "model.safetensors").is_file() and link.is_symlink()
    # an output whose place cannot be written fails before the work (a file where its parent folder should be)
    (tmp_path / "afile").write_text("x")
    assert cli_main(["merge", str(adapter), str(tmp_path / "afile" / "out")]) == 2
    assert "cannot write the merged model" in capsys.readouterr().err


def test_an_adapter_on_the_wrong_base_says_which_base_it_was_trained_on(tmp_path, tiny_llama, trained_run, capsys):
    """Issue 15 item 6: merging onto a base of other shapes names both bases in one line."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    adapter = _train_adapter(tmp_path, trained_run)
    capsys.readouterr()
    other = tmp_path / "wider"
    cfg = LlamaConfig(vocab_size=49152, hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(other))
    for f in tiny_llama.glob("tokenizer*"):
        shutil.copy(f, other / f.name)
    assert cli_main(["merge", str(adapter), str(tmp_path / "m"), "--base", str(other)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "was trained on" in err and str(tiny_llama) in err and f"this base is {other}" in err
