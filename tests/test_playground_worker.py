"""The playground's generation process on tiny random models: one base in memory, the adapter toggled, tokens
streamed, labels with probabilities, held-out batches with their metric; the real process through its client; and a
GGUF export beside the adapter in llama.cpp (the same prompt's token ids, so an f16 file answers as the adapter)."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path

import pytest

from fixtures import CUSTOM_COLUMNS, config_run
from loratui.core.errors import LoratuiError
from loratui.core.playground import PlaygroundClient
from loratui.train.playground_worker import Playground, macro_f1, read_examples, valid_json


@pytest.fixture(scope="module")
def llama_adapter(tmp_path_factory, tiny_llama) -> Path:
    """A random (non-zero) LoRA adapter on the tiny Llama: its answers differ from the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_llama)),
                           LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                      init_lora_weights=False))
    out = tmp_path_factory.mktemp("pg") / "adapter"
    model.save_pretrained(str(out))
    cfg = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(tiny_llama)}))
    return out


@pytest.fixture(scope="module")
def bert_adapter(tmp_path_factory, tiny_bert) -> Path:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    labels = ["negative", "neutral", "positive"]
    base = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_bert), num_labels=3, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value"],
                                            init_lora_weights=False))
    out = tmp_path_factory.mktemp("pg-cls") / "adapter"
    model.save_pretrained(str(out))
    cfg = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(tiny_bert)}))
    (out / "loratui.json").write_text(json.dumps({"base_model": str(tiny_bert), "task": "seq-cls", "num_labels": 3,
                                                  "labels": labels}))
    return out


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, kind: str, **data) -> None:
        self.events.append({"kind": kind, **data})

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind]


def test_base_and_adapter_from_one_model(llama_adapter):
    rec = Recorder()
    pg = Playground(rec)
    info = pg.load(str(llama_adapter), device="cpu")
    assert info["has_adapter"] and info["task"] == "causal-lm" and info["chat_template"]
    assert info["memory_after"]["rss"] > info["memory_before"]["rss"] > 0
    pg.generate({"id": 7, "prompt": "Hello there", "max_new_tokens": 6, "greedy": True})
    done = {e["side"]: e for e in rec.of("done")}
    assert set(done) == {"adapter", "base"} and all(e["tokens"] == 6 for e in done.values())
    for side in ("adapter", "base"):  # streamed pieces add up to the answer
        streamed = "".join(e["text"] for e in rec.of("token") if e["side"] == side)
        assert streamed.strip() == done[side]["text"]
    assert done["adapter"]["text"] != done["base"]["text"]
    # the base answer is the plain base model's: disable_adapter really turns it off
    import torch
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(json.loads(
        (llama_adapter / "adapter_config.json").read_text())["base_model_name_or_path"]).eval()
    text = pg.render({"prompt": "Hello there"})
    ids = pg.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = plain.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=pg.tokenizer.pad_token_id)
    assert pg.tokenizer.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == \
        done["base"]["text"]


def test_stop_ends_a_generation_early(llama_adapter):
    rec = Recorder()
    pg = Playground(rec)
    pg.load(str(llama_adapter), device="cpu")

    def emit(kind, **data):
        rec(kind, **data)
        if kind == "token":
            pg.stop.set()

    pg.emit = emit
    pg.generate({"id": 1, "prompt": "Hi", "max_new_tokens": 40})
    done = rec.of("done")
    assert len(done) == 1 and done[0]["stopped"] and done[0]["tokens"] < 40  # the base side never started


def test_batch_scores_both_models(llama_adapter, tmp_path):
    path = tmp_path / "held.jsonl"
    path.write_text("".join(json.dumps({"instruction": "Extract.", "input": f"row {i}", "output": '{"a": 1}'}) + "\n"
                            for i in range(3)))
    rec = Recorder()
    pg = Playground(rec)
    pg.load(str(llama_adapter), device="cpu")
    pg.batch({"id": 2, "file": str(path), "n": 2, "max_new_tokens": 4})
    items, done = rec.of("batch_item"), rec.of("batch_done")[0]
    assert [i["index"] for i in items] == [0, 1] and items[0]["prompt"] == "row 0"
    assert set(done["scores"]) == {"adapter", "base"} and done["n"] == 2
    assert done["scores"]["base"] == {"exact": 0, "valid_json": 0}


def test_batch_on_the_runs_held_out_split(llama_adapter, tmp_path):
    """A run trained with data.validation_fraction: the batch dialog offered its validation file only (it has none),
    so its held-out rows were never asked. Loading says how many it held out; a batch with held_out asks them: the
    split the engine made (load_splits, the run's seed), under the run's names."""
    from loratui.train.data import load_splits

    cfg, run = config_run(tmp_path / "runs", {"source": "sample:contacts-json.jsonl", "max_samples": 100,
                                              "validation_fraction": 0.1}, llama_adapter)
    rec = Recorder()
    pg = Playground(rec)
    info = pg.load(str(run.adapter_dir), device="cpu")
    assert info["held_out"] == {"fraction": 0.1, "rows": 10} and info["batch_file"] is None
    pg.batch({"id": 2, "held_out": True, "n": 3, "max_new_tokens": 2})
    items, done = rec.of("batch_item"), rec.of("batch_done")[0]
    _train, val = load_splits(cfg)
    assert [it["prompt"] for it in items] == [val[i]["input"] for i in range(3)]
    assert [it["reference"] for it in items] == [val[i]["output"] for i in range(3)]
    assert done["n"] == 3 and done["file"] == "the run's held-out 10%"
    checkpoint = run.path / "checkpoints" / "checkpoint-2"  # a checkpoint of the run finds the run's config too
    shutil.copytree(run.adapter_dir, checkpoint)
    assert Playground(Recorder()).load(str(checkpoint), device="cpu")["held_out"] == {"fraction": 0.1, "rows": 10}
    pg_alone = Playground(Recorder())  # an adapter of no run: nothing to offer, and a batch for it says so
    assert pg_alone.load(str(llama_adapter), device="cpu")["held_out"] is None
    with pytest.raises(LoratuiError, match="no held-out rows"):
        pg_alone.batch({"id": 3, "held_out": True, "n": 2})


def test_batch_on_the_runs_validation_file_reads_its_columns(llama_adapter, tmp_path):
    """The dialog's default, the run's validation file, was read with the standard column names only: a run with
    data.instruction_column: question (and so on) got 'holds no examples this playground can read'."""
    rows = [{"question": "Extract.", "context": f"row {i}", "answer": '{"a": 1}'} for i in range(3)]
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _cfg, run = config_run(tmp_path / "runs", {"source": str(tmp_path / "val.jsonl"), **CUSTOM_COLUMNS,
                                               "validation_file": str(tmp_path / "val.jsonl")}, llama_adapter)
    rec = Recorder()
    pg = Playground(rec)
    assert pg.load(str(run.adapter_dir), device="cpu")["batch_file"] == str(tmp_path / "val.jsonl")
    pg.batch({"id": 2, "n": 2, "max_new_tokens": 2})
    assert [(it["prompt"], it["reference"]) for it in rec.of("batch_item")] == [("row 0", '{"a": 1}'),
                                                                                ("row 1", '{"a": 1}')]


def test_classifier_labels_with_probabilities(bert_adapter, tmp_path):
    rec = Recorder()
    pg = Playground(rec)
    info = pg.load(str(bert_adapter), device="cpu")
    assert info["task"] == "seq-cls" and info["labels"] == ["negative", "neutral", "positive"]
    pg.generate({"id": 3, "prompt": "Not bad at all."})  # a classifier classifies what it is given
    got = {e["side"]: e["probs"] for e in rec.of("classified")}
    assert set(got) == {"adapter", "base"}
    for probs in got.values():
        assert sorted(n for n, _ in probs) == ["negative", "neutral", "positive"]
        assert sum(p for _, p in probs) == pytest.approx(1.0, abs=1e-4)
    assert got["adapter"] != got["base"]
    held = tmp_path / "held.csv"
    held.write_text("text,label\nit was great,positive\nit was fine,neutral\nawful,negative\n")
    pg.batch({"id": 4, "file": str(held), "n": 10})
    done = rec.of("batch_done")[0]
    assert done["n"] == 3 and 0 <= done["scores"]["adapter"]["accuracy"] <= 1 and "f1" in done["scores"]["base"]


def test_metrics_and_files(tmp_path):
    assert valid_json('{"a": 1}') and not valid_json("{a: 1}")
    assert macro_f1(["a", "b", "a"], ["a", "b", "b"]) == pytest.approx((2 / 3 + 2 / 3) / 2)
    rows = read_examples("sample:contacts-json-eval.jsonl", 5)
    assert len(rows) == 5 and rows[0]["reference"].startswith("{")
    chat = tmp_path / "c.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "2+2?"},
                                             {"role": "assistant", "content": "4"}]}) + "\n")
    assert read_examples(str(chat), 5) == [{"messages": [{"role": "user", "content": "2+2?"}], "reference": "4",
                                            "shown": "2+2?"}]


def test_the_real_process_through_its_client(llama_adapter):
    events: list[dict] = []
    finished = threading.Event()

    def on_event(ev: dict) -> None:
        events.append(ev)
        if ev["kind"] in ("done", "error") and (ev.get("side") == "base" or ev["kind"] == "error"):
            finished.set()

    client = PlaygroundClient(on_event)
    try:
        client.send("load", model=str(llama_adapter), device="cpu")
        client.send("generate", prompt="Hello", max_new_tokens=4)
        assert finished.wait(120), events[-3:]
    finally:
        client.close()
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "ready" and "loaded" in kinds and kinds.count("done") == 2
    assert "error" not in kinds


# -- the GGUF side: an export in llama.cpp beside the adapter ------------------------------------------------------

@pytest.fixture(scope="module")
def adapter_ggufs(tmp_path_factory, llama_adapter, tiny_llama) -> dict[str, Path]:
    """The adapter merged and converted as ``loratui export`` does (f16 and q8_0), in this process (about 2 s)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loratui.train import gguf_worker
    from loratui.train.export_check import normalize_tokenizer

    out = tmp_path_factory.mktemp("pg-gguf")
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), str(llama_adapter))
    merged.merge_and_unload().save_pretrained(str(out / "hf"))
    AutoTokenizer.from_pretrained(str(tiny_llama)).save_pretrained(str(out / "hf"))
    normalize_tokenizer(out / "hf")
    argv = sys.argv[:]
    try:
        for kind in ("f16", "q8_0"):
            gguf_worker.convert(str(out / "hf"), str(out / f"model-{kind}.gguf"), kind)
    finally:
        sys.argv = argv
    return {kind: out / f"model-{kind}.gguf" for kind in ("f16", "q8_0")}


def test_a_gguf_export_answers_beside_the_adapter(llama_adapter, adapter_ggufs, tmp_path):
    rec = Recorder()
    pg = Playground(rec)
    pg.load(str(llama_adapter), device="cpu")
    info = pg.load_gguf(str(adapter_ggufs["f16"]))
    assert info["type"] == "F16" and info["n_vocab"] == 49152 and rec.of("gguf_loaded")[0]["name"] == "model-f16.gguf"
    assert pg.sides() == ["adapter", "gguf"]  # the GGUF takes the base model's place
    pg.generate({"id": 1, "prompt": "Hello there", "max_new_tokens": 8})
    done = {e["side"]: e for e in rec.of("done")}
    assert set(done) == {"adapter", "gguf"} and done["gguf"]["tokens"] == 8 and done["gguf"]["tokens_per_s"] > 0
    streamed = "".join(e["text"] for e in rec.of("token") if e["side"] == "gguf")
    assert streamed.strip() == done["gguf"]["text"]
    # the same rendered prompt and token ids: the f16 file of the merged adapter answers as the adapter does
    assert done["gguf"]["text"] == done["adapter"]["text"] != ""
    held = tmp_path / "held.jsonl"
    held.write_text("".join(json.dumps({"instruction": "Extract.", "input": f"row {i}", "output": '{"a": 1}'}) + "\n"
                            for i in range(3)))
    pg.batch({"id": 2, "file": str(held), "n": 3, "max_new_tokens": 6})
    items, result = rec.of("batch_item"), rec.of("batch_done")[0]
    assert all(it["gguf_same"] and it["gguf"] == it["adapter"] for it in items)
    assert set(result["scores"]) == {"adapter", "gguf"}
    assert result["scores"]["gguf"] == {"exact": 0, "valid_json": 0, "same_as_adapter": 3}
    # another file replaces it; sampling draws on both sides with the same settings
    assert pg.load_gguf(str(adapter_ggufs["q8_0"]))["type"] == "Q8_0"
    rec.events.clear()
    pg.generate({"id": 3, "prompt": "Hi", "max_new_tokens": 5, "greedy": False, "temperature": 0.9, "seed": 1})
    assert {e["side"]: e["tokens"] for e in rec.of("done")} == {"adapter": 5, "gguf": 5}
    pg.load_gguf(None)
    assert pg.sides() == ["adapter", "base"] and rec.of("gguf_loaded")[-1]["file"] is None


def test_gguf_bad_inputs_are_one_line_each(llama_adapter, adapter_ggufs, bert_adapter, tmp_path, minilm_dir,
                                           monkeypatch):
    import io

    from transformers import AutoTokenizer

    from loratui.train.playground_gguf import vocab_problem
    from loratui.train.playground_worker import serve

    rec = Recorder()
    lines = [{"cmd": "load", "id": 1, "model": str(llama_adapter), "device": "cpu", "gguf": str(adapter_ggufs["f16"])}]
    (tmp_path / "notes.gguf").write_text("not a model")
    for bad in (tmp_path / "missing.gguf", tmp_path, tmp_path / "notes.gguf"):
        lines.append({"cmd": "load_gguf", "id": 2, "path": str(bad)})
    lines.append({"cmd": "generate", "id": 3, "prompt": "Hi", "max_new_tokens": 2})
    serve(io.StringIO("".join(json.dumps(c) + "\n" for c in lines)), emit=rec)
    assert rec.of("gguf_loaded")[0]["name"] == "model-f16.gguf"
    assert [e["side"] for e in rec.of("done")] == ["adapter", "gguf"]  # a file that did not load left the f16 one
    errors = [(e["message"], e["hint"]) for e in rec.of("error")]
    assert errors == [
        (f"gguf: no such file {tmp_path / 'missing.gguf'}",
         "export one first (Adapters: e, or loratui export --gguf q8_0)"),
        (f"gguf: {tmp_path} is a folder, not a GGUF file", "pick one of its files: notes.gguf"),
        ("gguf: notes.gguf is not a GGUF file (it does not start with 'GGUF')",
         "pick a .gguf file written by loratui export or llama.cpp")]
    pg = Playground(Recorder())
    with pytest.raises(LoratuiError, match="no model loaded"):
        pg.load_gguf(str(adapter_ggufs["f16"]))
    pg.load(str(llama_adapter), device="cpu")
    pg.tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))  # an adapter whose base has another vocabulary
    with pytest.raises(LoratuiError, match=r"another vocabulary than the adapter's base \(\d+ of \d+ tokens") as err:
        pg.load_gguf(str(adapter_ggufs["f16"]))
    assert err.value.field == "gguf" and "exported from this adapter" in err.value.hint
    assert vocab_problem(32000, str, pg.tokenizer, 49152) == "32,000 tokens, the adapter's base 49,152"
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # llama-cpp-python not installed
    with pytest.raises(LoratuiError, match="llama-cpp-python is not installed") as err:
        pg.load_gguf(str(adapter_ggufs["f16"]))
    assert "loratui[export]" in err.value.hint and pg.gguf is None
    monkeypatch.undo()
    pg.load(str(bert_adapter), device="cpu")
    with pytest.raises(LoratuiError, match="a classifier has no GGUF side"):
        pg.load_gguf(str(adapter_ggufs["f16"]))
