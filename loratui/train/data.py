"""Datasets for a run: load the rows, render them in the chosen format, tokenize with loss masks, batch them.

Heavy core: the engine imports this (datasets and transformers at module top); the UI calls it from worker threads.

    train, val = load_splits(cfg)                               # raw rows; DataError before any heavy work
    train, val, stats = tokenize_splits(cfg, tokenizer, train, val)
    collator = make_collator(cfg, tokenizer)
    examples = preview(cfg, tokenizer, n=3)                     # what the setup screen shows before launch

Formats (``data.format``):
- ``text``: loss on every token; the eos token is appended so the model learns where a document ends.
- ``alpaca``: instruction / input / output columns. Rendered with the tokenizer's chat template when it has one
  (optional ``data.system_prompt`` as the system message; user = instruction + "\\n\\n" + input; assistant = output),
  else with the classic Alpaca prompt. Loss on the response only, including the end-of-turn token.
- ``chat``: a list of {role, content} messages (ShareGPT {from, value} is accepted too), rendered with the chat
  template; loss on every assistant turn, including its end-of-turn token, and nowhere else.
- ``classification``: text + label for sequence classification; string labels map to their sorted unique names.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import datasets
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, DataCollatorWithPadding

from loratui.core.config import RunConfig
from loratui.core.errors import DataError
from loratui.core.paths import looks_like_path

SAMPLES_DIR = Path(__file__).resolve().parents[1] / "samples"
#: file extension -> datasets builder
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
IGNORE_INDEX = -100

ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)

#: columns each format needs: (config key, required)
FORMAT_COLUMNS: dict[str, list[tuple[str, bool]]] = {
    "text": [("text_column", True)],
    "alpaca": [("instruction_column", True), ("input_column", False), ("output_column", True)],
    "chat": [("messages_column", True)],
    "classification": [("text_column", True), ("label_column", True)],
}

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "tool": "tool", "function": "tool", "bing": "assistant", "chatgpt": "assistant"}


@dataclass
class PreviewExample:
    """One example as the model will see it: decoded pieces, True where the tokens carry loss."""

    segments: list[tuple[str, bool]]
    n_tokens: int
    truncated: bool = False
    label: str | None = None
    loss_tokens: int = 0

    @property
    def text(self) -> str:
        return "".join(s for s, _ in self.segments)

    @property
    def trained_text(self) -> str:
        return "".join(s for s, trains in self.segments if trains)


# ---------------------------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------------------------


def available_samples() -> list[str]:
    return sorted(p.name for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in FILE_BUILDERS)


def resolve_source(source: str) -> str:
    """``sample:NAME`` -> the shipped file's absolute path; local paths expanded; anything else (a hub name) as is."""
    s = source.strip()
    if s.startswith("sample:"):
        return str(SAMPLES_DIR / s[len("sample:"):].strip())
    path = Path(os.path.expandvars(s)).expanduser()
    if path.exists() or looks_like_path(s, data_file=True):
        return str(path.resolve())
    return s


def _first_cause(err: BaseException) -> str:
    """The most telling line of an exception chain (datasets wraps the parser's error)."""
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    for e in chain:
        if type(e).__name__ not in ("DatasetGenerationError",) and str(e).strip():
            return " ".join(str(e).split())[:200]
    return type(chain[0]).__name__


def _read_file(path_str: str, field: str, original: str) -> Dataset:
    path = Path(path_str)
    if not path.exists():
        if original.strip().startswith("sample:"):
            raise DataError(f"no sample named '{original.strip()[7:]}'", field=field,
                            hint="shipped samples: " + ", ".join(available_samples()))
        raise DataError(f"no such file {path}", field=field,
                        hint="check the path, or use sample:NAME for a shipped sample")
    ext = path.suffix.lower()
    if ext not in FILE_BUILDERS:
        raise DataError(f"unsupported file type '{ext or path.name}'", field=field,
                        hint="use a .json, .jsonl, .csv or .parquet file, or a folder of them")
    if path.stat().st_size == 0:
        raise DataError(f"{path.name} is empty", field=field, hint="point it at a file with rows")
    builder = FILE_BUILDERS[ext]
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # noqa: BLE001 - any parser failure is a user-facing data problem
        kind = {"json": "JSON / JSON lines", "csv": "CSV", "parquet": "Parquet"}[builder]
        raise DataError(f"cannot read {path.name} as {kind}: {_first_cause(err)}", field=field,
                        hint="fix or re-export the file") from None


def _load_named(name: str, subset: str | None, split: str, field: str, split_field: str) -> Dataset:
    """A hub dataset or a local folder, through ``datasets.load_dataset(name, subset, split=...)``.

    ``field`` is the config key blamed when the dataset cannot be loaded, ``split_field`` when the split is unknown.
    """
    try:
        ds = datasets.load_dataset(name, subset, split=split)
    except ValueError as err:
        msg = _first_cause(err)
        if "split" in msg.lower():
            raise DataError(f"no split '{split}' in {_short(name)}: {msg}", field=split_field,
                            hint="set it to one of the dataset's splits") from None
        raise DataError(f"cannot load dataset '{_short(name)}': {msg}", field=field) from None
    except Exception as err:  # noqa: BLE001
        raise DataError(f"cannot load dataset '{_short(name)}': {_first_cause(err)}", field=field,
                        hint="check the name (org/name), the path, or that this machine can reach the hub") from None
    if isinstance(ds, datasets.DatasetDict):  # should not happen with split=..., but be safe
        ds = ds[split]
    return ds


def _short(name: str) -> str:
    return Path(name).name if Path(name).is_absolute() else name


def _load_any(spec: str, cfg: RunConfig, field: str, split: str, split_field: str) -> Dataset:
    """A file, a folder (split ``split``) or a hub dataset (split ``split``)."""
    resolved = resolve_source(spec)
    path = Path(resolved)
    if path.is_dir():
        return _load_named(str(path), cfg.data.subset, split, field, split_field)
    if path.is_absolute():
        return _read_file(resolved, field, spec)
    return _load_named(resolved, cfg.data.subset, split, field, split_field)


def _is_split_source(cfg: RunConfig) -> bool:
    """The source is a folder or a hub dataset (so validation_file may name a split)."""
    resolved = resolve_source(cfg.data.source)
    return Path(resolved).is_dir() or not Path(resolved).is_absolute()


# ---------------------------------------------------------------------------------------------------------------
# columns and empty rows
# ---------------------------------------------------------------------------------------------------------------


def _guess_format(columns: list[str]) -> str | None:
    cols = set(columns)
    if {"messages"} & cols or {"conversations"} & cols:
        return "chat"
    if {"instruction", "output"} <= cols:
        return "alpaca"
    if {"text", "label"} <= cols or {"sentence", "label"} <= cols:
        return "classification"
    if "text" in cols:
        return "text"
    return None


def check_columns(cfg: RunConfig, ds: Dataset, where: str) -> None:
    """DataError naming the config key to set when a column the format needs is missing."""
    fmt = cfg.data.format
    columns = list(ds.column_names)
    for key, required in FORMAT_COLUMNS[fmt]:
        col = getattr(cfg.data, key)
        if required and col not in columns:
            guess = _guess_format(columns)
            hint = f"set data.{key} to one of the columns"
            if guess and guess != fmt:
                hint += f", or data.format: {guess} (the columns look like {guess} data)"
            raise DataError(f"format {fmt} needs column '{col}', not found in {where} "
                            f"(columns: {', '.join(columns) or 'none'})", field=f"data.{key}", hint=hint)


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _row_ok(cfg: RunConfig) -> Callable[[dict], bool]:
    d = cfg.data
    fmt = d.format
    if fmt == "text":
        return lambda r: not _blank(r[d.text_column])
    if fmt == "alpaca":
        return lambda r: not _blank(r[d.instruction_column]) and not _blank(r[d.output_column])
    if fmt == "chat":
        return lambda r: isinstance(r[d.messages_column], (list, tuple)) and len(r[d.messages_column]) > 0
    return lambda r: not _blank(r[d.text_column]) and not _blank(r[d.label_column])


def _drop_empty(cfg: RunConfig, ds: Dataset, where: str, field: str) -> Dataset:
    ok = _row_ok(cfg)
    n = len(ds)
    if n:
        fingerprint = _fp(ds, "empty", cfg.data.format, _columns_key(cfg))
        ds = ds.filter(lambda batch: [ok(dict(zip(batch, vals))) for vals in zip(*batch.values())],
                       batched=True, desc="dropping empty rows", new_fingerprint=fingerprint)
    if len(ds) == 0:
        what = "has no rows" if n == 0 else \
            f"has no usable rows (all {n} are empty in the columns format {cfg.data.format} uses)"
        raise DataError(f"{where} {what}", field=field, hint="check the file and the data.*_column settings")
    return ds


def _columns_key(cfg: RunConfig) -> str:
    d = cfg.data
    return "|".join([d.text_column, d.instruction_column, d.input_column, d.output_column, d.messages_column,
                     d.label_column])


# ---------------------------------------------------------------------------------------------------------------
# load_splits
# ---------------------------------------------------------------------------------------------------------------


def _load_train_source(cfg: RunConfig) -> Dataset:
    d = cfg.data
    ds = _load_any(d.source, cfg, "data.source", d.split, "data.split")
    where = _display(d.source)
    check_columns(cfg, ds, where)
    return _drop_empty(cfg, ds, where, "data.source")


def _display(spec: str) -> str:
    resolved = resolve_source(spec)
    return Path(resolved).name if Path(resolved).is_absolute() else resolved


def load_splits(cfg: RunConfig) -> tuple[Dataset, Dataset | None]:
    """Raw train and validation rows (validation None when ``validation_fraction`` is 0 and no file is given).

    ``max_samples`` keeps the first N rows of the source, before a validation split is held out of them.
    """
    d = cfg.data
    train = _load_train_source(cfg)
    if d.max_samples is not None and d.max_samples < len(train):
        train = train.select(range(d.max_samples))

    if d.validation_file:
        spec = d.validation_file.strip()
        if _is_split_source(cfg) and not looks_like_path(spec, data_file=True) and not Path(resolve_source(spec)).exists():
            # a split of the same folder / hub dataset
            val = _load_named(resolve_source(d.source), d.subset, spec, "data.validation_file", "data.validation_file")
        elif _is_split_source(cfg):
            val = _load_any(spec, cfg, "data.validation_file", "train", "data.validation_file")
        else:  # the source is a file: the validation set is a file too
            resolved = resolve_source(spec)
            val = _read_file(str(Path(resolved).resolve()), "data.validation_file", spec)
        where = _display(spec)
        check_columns(cfg, val, where)
        val = _drop_empty(cfg, val, where, "data.validation_file")
        return train, val

    if d.validation_fraction <= 0:
        return train, None
    n = len(train)
    n_val = max(1, round(n * d.validation_fraction))
    if n - n_val < 1:
        raise DataError(f"only {n} usable rows, too few to hold out a validation split",
                        field="data.validation_fraction",
                        hint="set data.validation_fraction: 0, or give data.validation_file")
    parts = train.train_test_split(test_size=n_val, seed=cfg.train.seed, shuffle=True)
    return parts["train"], parts["test"]


# ---------------------------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------------------------


def prepare_tokenizer(tokenizer):
    """Pad token = eos (or unk) when missing; right padding for training. Returns the tokenizer."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
        else:
            raise DataError("the tokenizer has no pad, eos or unk token to pad batches with", field="model.name",
                            hint="use a model whose tokenizer defines an eos token")
    tokenizer.padding_side = "right"
    return tokenizer


def _has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _eos_text(tokenizer) -> str:
    return tokenizer.eos_token or tokenizer.sep_token or ""


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    return tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def effective_max_length(cfg: RunConfig, tokenizer) -> int:
    """``data.max_length``, capped by the tokenizer's model_max_length when that is a real limit."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return min(cfg.data.max_length, limit)
    return cfg.data.max_length


# ---------------------------------------------------------------------------------------------------------------
# rendering: a row -> text segments (text, trains)
# ---------------------------------------------------------------------------------------------------------------


def _messages(value: Any, column: str) -> list[dict]:
    if not isinstance(value, (list, tuple)):
        raise DataError(f"column '{column}' must hold a list of messages, got {type(value).__name__}",
                        field="data.messages_column", hint="each row needs [{role, content}, ...]")
    out = []
    for m in value:
        if not isinstance(m, dict):
            raise DataError(f"column '{column}' holds a {type(m).__name__} where a message was expected",
                            field="data.messages_column", hint="each message is {role, content}")
        if m.get("role") is not None and "content" in m:
            out.append({"role": m["role"], "content": "" if m["content"] is None else m["content"]})
        elif m.get("from") is not None and "value" in m:  # ShareGPT
            out.append({"role": _SHAREGPT_ROLES.get(str(m["from"]).lower(), str(m["from"])), "content": m["value"]})
        else:
            raise DataError(f"a message in column '{column}' has keys {sorted(m)}", field="data.messages_column",
                            hint="messages need role and content (or ShareGPT from and value)")
    return out


def _render(tokenizer, messages: list[dict], **kw) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kw)


def chat_segments(tokenizer, messages: list[dict]) -> list[tuple[str, bool]]:
    """The chat-template rendering of ``messages`` split into (text, trains) pieces: each assistant turn's content
    plus its end-of-turn marker trains, everything else (system, user, role headers) does not.

    A turn's span is the difference between the conversation rendered up to it with the generation prompt and the
    conversation rendered through it, so whatever the template adds (headers, end tokens) is placed exactly.
    """
    try:
        full = _render(tokenizer, messages)
    except Exception as err:  # noqa: BLE001 - template errors are data problems (roles out of order ...)
        cause = _first_cause(err)
        if "system" in cause.lower():
            raise DataError(f"the model's chat template rejected the system message: {cause}",
                            field="data.system_prompt", hint="leave data.system_prompt empty for this model") from None
        raise DataError(f"the chat template rejected a conversation: {cause}", field="data.messages_column",
                        hint="check the roles alternate user/assistant") from None
    segments: list[tuple[str, bool]] = []
    pos = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        span = _assistant_span(tokenizer, messages, i, full, pos)
        if span is None:
            continue
        start, end = span
        if start > pos:
            segments.append((full[pos:start], False))
        segments.append((full[start:end], True))
        pos = end
    if pos < len(full):
        segments.append((full[pos:], False))
    return segments


def _assistant_span(tokenizer, messages, i, full, pos) -> tuple[int, int] | None:
    try:
        before = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1])
    except Exception:  # noqa: BLE001 - fall back to finding the content
        before = through = None
    if before is not None and full.startswith(before) and full.startswith(through) and pos <= len(before):
        end = len(through.rstrip())
        if end > len(before):
            return len(before), end
    # fallback (templates that render earlier turns differently): the content itself plus a special token after it
    content = str(messages[i]["content"]).strip()
    if not content:
        return None
    start = full.find(content, pos)
    if start < 0:
        return None
    end = start + len(content)
    specials = set(tokenizer.all_special_tokens)
    specials |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    for tok in sorted((t for t in specials if t), key=len, reverse=True):
        if full.startswith(tok, end):
            end += len(tok)
            break
    return start, end


def _user_text(instruction: str, inp: Any) -> str:
    return instruction if _blank(inp) else f"{instruction}\n\n{inp}"


def alpaca_messages(cfg: RunConfig, instruction: str, inp: Any, output: str | None) -> list[dict]:
    msgs = []
    if cfg.data.system_prompt:
        msgs.append({"role": "system", "content": cfg.data.system_prompt})
    msgs.append({"role": "user", "content": _user_text(instruction, inp)})
    if output is not None:
        msgs.append({"role": "assistant", "content": output})
    return msgs


def alpaca_prompt(instruction: str, inp: Any) -> str:
    if _blank(inp):
        return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)
    return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=inp)


def format_prompt(cfg: RunConfig, tokenizer, instruction: str, inp: Any = None) -> str:
    """The inference prompt for an alpaca-format model (what to feed ``generate`` when trying an adapter)."""
    if _has_chat_template(tokenizer):
        return _render(tokenizer, alpaca_messages(cfg, instruction, inp, None), add_generation_prompt=True)
    return alpaca_prompt(instruction, inp)


def row_segments(cfg: RunConfig, tokenizer, row: dict) -> list[tuple[str, bool]]:
    """One raw row rendered as (text, trains) pieces for a causal-LM format."""
    d = cfg.data
    fmt = d.format
    if fmt == "text":
        return [(str(row[d.text_column]) + _eos_text(tokenizer), True)]
    if fmt == "alpaca":
        instruction = str(row[d.instruction_column])
        inp = row.get(d.input_column)
        output = str(row[d.output_column])
        if _has_chat_template(tokenizer):
            return chat_segments(tokenizer, alpaca_messages(cfg, instruction, inp, output))
        return [(alpaca_prompt(instruction, inp), False), (output + _eos_text(tokenizer), True)]
    if fmt == "chat":
        if not _has_chat_template(tokenizer):
            raise DataError("format chat needs a tokenizer with a chat template, and this one has none",
                            field="data.format", hint="use format alpaca or text, or a model with a chat template")
        msgs = _messages(row[d.messages_column], d.messages_column)
        if d.system_prompt and not any(m["role"] == "system" for m in msgs):
            msgs = [{"role": "system", "content": d.system_prompt}] + msgs
        return chat_segments(tokenizer, msgs)
    raise ValueError(f"not a causal-LM format: {fmt}")


# ---------------------------------------------------------------------------------------------------------------
# tokenizing
# ---------------------------------------------------------------------------------------------------------------


def _encode_segments(tokenizer, segments: list[tuple[str, bool]], bos: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 where the text does not train) for the joined segments."""
    text = "".join(s for s, _ in segments)
    spans, pos = [], 0
    for s, trains in segments:
        if trains:
            spans.append((pos, pos + len(s)))
        pos += len(s)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = []
        for tid, (a, b) in zip(ids, enc["offset_mapping"]):
            trains = any(s <= a < e for s, e in spans) if b > a else False
            labels.append(tid if trains else IGNORE_INDEX)
    else:  # slow tokenizers have no offsets: tokenize piece by piece
        ids, labels = [], []
        for s, trains in segments:
            piece = tokenizer(s, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += piece if trains else [IGNORE_INDEX] * len(piece)
    if bos:
        ids = [tokenizer.bos_token_id] + ids
        labels = [IGNORE_INDEX] + labels
    return ids, labels


def encode_row(cfg: RunConfig, tokenizer, row: dict, max_length: int, bos: bool) -> dict:
    """A causal-LM row -> input_ids, attention_mask, labels (truncated) plus bookkeeping."""
    segments = row_segments(cfg, tokenizer, row)
    # chat templates carry their own bos; plain prompts get the tokenizer's default one
    add_bos = bos and not (cfg.data.format != "text" and _has_chat_template(tokenizer))
    ids, labels = _encode_segments(tokenizer, segments, add_bos)
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    n_loss = sum(1 for x in labels[1:] if x != IGNORE_INDEX)  # the first token is never predicted
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels,
            "_truncated": truncated, "_n_loss": n_loss, "_length": len(ids)}


_SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _tokenizer_key(tokenizer) -> str:
    parts = [getattr(tokenizer, "name_or_path", ""), type(tokenizer).__name__, str(len(tokenizer)),
             str(getattr(tokenizer, "chat_template", "")), str(tokenizer.eos_token), str(tokenizer.bos_token),
             str(tokenizer.pad_token), str(tokenizer.sep_token)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _fp(ds: Dataset, *parts: Any) -> str:
    """A deterministic fingerprint for a transform of ``ds`` (so datasets' cache works without hashing closures)."""
    payload = json.dumps([ds._fingerprint, _SOURCE_HASH, *[str(p) for p in parts]])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _map_causal(cfg: RunConfig, tokenizer, ds: Dataset, max_length: int, bos: bool, desc: str) -> Dataset:
    def fn(batch):
        rows = [dict(zip(batch, vals)) for vals in zip(*batch.values())]
        out = [encode_row(cfg, tokenizer, r, max_length, bos) for r in rows]
        return {k: [o[k] for o in out] for k in out[0]} if out else {}

    key = (cfg.data.model_dump_json(include={"format", "system_prompt", "text_column", "instruction_column",
                                             "input_column", "output_column", "messages_column"}),
           max_length, bos, _tokenizer_key(tokenizer))
    return ds.map(fn, batched=True, batch_size=256, remove_columns=ds.column_names, desc=desc,
                  new_fingerprint=_fp(ds, "causal", *key))


def _finish(ds: Dataset, split: str, field: str) -> tuple[Dataset, dict]:
    """Drop rows without loss tokens, count what happened, remove bookkeeping columns."""
    n = len(ds)
    truncated = sum(bool(x) for x in ds["_truncated"]) if n else 0
    keep = ds.filter(lambda b: [x > 0 for x in b["_n_loss"]], batched=True,
                     desc=f"dropping {split} rows without response tokens", new_fingerprint=_fp(ds, "keep"))
    dropped = n - len(keep)
    if n and len(keep) == 0:
        raise DataError(f"every {split} example was left with no tokens to learn from (the response was cut off)",
                        field="data.max_length", hint="raise data.max_length or shorten the prompts")
    lengths = list(keep["_length"])
    loss = sum(keep["_n_loss"])
    keep = keep.remove_columns(["_truncated", "_n_loss", "_length"])
    stats = {"examples": len(keep), "dropped": dropped, "truncated": truncated,
             "mean_tokens": (sum(lengths) / len(lengths)) if lengths else 0.0,
             "max_tokens": max(lengths, default=0), "total_tokens": sum(lengths), "loss_tokens": loss}
    return keep, stats


# ---------------------------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------------------------


def _label_values(ds: Dataset, column: str) -> list:
    return list(ds[column])


def label_names(cfg: RunConfig, train: Dataset) -> list[str]:
    """Class names in id order: a ClassLabel's names, the sorted unique strings, or "0".."num_labels-1" for ints."""
    col = cfg.data.label_column
    feature = train.features.get(col)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    values = [v for v in _label_values(train, col) if v is not None]
    if values and all(isinstance(v, str) for v in values):
        return sorted(set(v.strip() for v in values))
    _ints(values, "data.label_column", col)
    return [str(i) for i in range(cfg.model.num_labels)]


def _ints(values: list, field: str, col: str) -> list[int]:
    out = []
    for v in values:
        if isinstance(v, bool):
            out.append(int(v))
        elif isinstance(v, int):
            out.append(v)
        elif isinstance(v, float) and v.is_integer():
            out.append(int(v))
        else:
            raise DataError(f"label {v!r} in column '{col}' is neither a class name nor a whole number", field=field,
                            hint="labels must be strings (class names) or integers 0..num_labels-1")
    return out


def _label_ids(cfg: RunConfig, ds: Dataset, names: list[str], string_labels: bool, where: str) -> list[int]:
    col = cfg.data.label_column
    values = _label_values(ds, col)
    n = cfg.model.num_labels
    if string_labels:
        index = {name: i for i, name in enumerate(names)}
        ids = []
        for v in values:
            if not isinstance(v, str) or v.strip() not in index:
                raise DataError(f"label {v!r} in {where} is not one of the training labels ({', '.join(names)})",
                                field="data.label_column", hint="use the same label names in every split")
            ids.append(index[v.strip()])
        return ids
    ids = _ints(values, "data.label_column", col)
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        worst = max(bad, key=abs)
        raise DataError(f"label {worst} in {where} is outside 0..{n - 1}", field="model.num_labels",
                        hint=f"set model.num_labels to {max(max(ids) + 1, n)}" if worst >= 0
                        else "labels must be 0..num_labels-1 (drop unlabeled rows)")
    return ids


def _map_cls(cfg: RunConfig, tokenizer, ds: Dataset, ids: list[int], max_length: int, desc: str) -> Dataset:
    col = cfg.data.text_column
    ds = ds.select_columns([col]).add_column("labels", ids)

    def fn(batch):
        texts = [str(t) for t in batch[col]]
        full = tokenizer(texts)["input_ids"]
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": batch["labels"],
                "_truncated": [len(f) > max_length for f in full], "_n_loss": [1] * len(texts),
                "_length": [len(x) for x in enc["input_ids"]]}

    return ds.map(fn, batched=True, batch_size=512, remove_columns=[col], desc=desc,
                  new_fingerprint=_fp(ds, "cls", col, max_length, _tokenizer_key(tokenizer)))


def _string_labels(cfg: RunConfig, train: Dataset) -> bool:
    col = cfg.data.label_column
    if isinstance(train.features.get(col), datasets.ClassLabel):
        return False
    return any(isinstance(v, str) for v in _label_values(train, col))


def _tokenize_cls(cfg, tokenizer, train, val, max_length):
    names = label_names(cfg, train)
    string_labels = _string_labels(cfg, train)
    named = string_labels or isinstance(train.features.get(cfg.data.label_column), datasets.ClassLabel)
    if named and len(names) > cfg.model.num_labels:
        raise DataError(f"the data has {len(names)} labels ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})"
                        f" but model.num_labels is {cfg.model.num_labels}", field="model.num_labels",
                        hint=f"set model.num_labels: {len(names)}")
    train_ids = _label_ids(cfg, train, names, string_labels, "the training data")
    tr = _map_cls(cfg, tokenizer, train, train_ids, max_length, "tokenizing train")
    tr, tr_stats = _finish(tr, "train", "data.source")
    va, va_stats = None, None
    if val is not None:
        val_ids = _label_ids(cfg, val, names, string_labels, "the validation data")
        va = _map_cls(cfg, tokenizer, val, val_ids, max_length, "tokenizing validation")
        va, va_stats = _finish(va, "validation", "data.validation_file")
    return tr, va, tr_stats, va_stats, names


# ---------------------------------------------------------------------------------------------------------------
# public: tokenize_splits, make_collator, preview
# ---------------------------------------------------------------------------------------------------------------


def tokenize_splits(cfg: RunConfig, tokenizer, train: Dataset, val: Dataset | None
                    ) -> tuple[Dataset, Dataset | None, dict]:
    """Tokenized train / validation sets and stats.

    Causal LM: columns input_ids, attention_mask, labels (-100 where no loss). Seq-cls: input_ids, attention_mask
    (token_type_ids where the tokenizer makes them) and integer labels.
    Stats: train_examples, eval_examples, dropped_train, dropped_eval (rows left with no loss tokens after
    truncation), truncated_train, truncated_eval, mean_tokens, max_tokens, total_tokens, loss_tokens (train),
    max_length (the one applied), label_names (seq-cls only).
    """
    prepare_tokenizer(tokenizer)
    max_length = effective_max_length(cfg, tokenizer)
    if cfg.model.task == "seq-cls":
        tr, va, tr_stats, va_stats, names = _tokenize_cls(cfg, tokenizer, train, val, max_length)
    else:
        if cfg.data.format == "chat" and not _has_chat_template(tokenizer):
            raise DataError("format chat needs a tokenizer with a chat template, and this one has none",
                            field="data.format", hint="use format alpaca or text, or a model with a chat template")
        bos = _adds_bos(tokenizer)
        tr, tr_stats = _finish(_map_causal(cfg, tokenizer, train, max_length, bos, "tokenizing train"),
                               "train", "data.source")
        va, va_stats = None, None
        if val is not None:
            va, va_stats = _finish(_map_causal(cfg, tokenizer, val, max_length, bos, "tokenizing validation"),
                                   "validation", "data.validation_file")
        names = None
    stats = {
        "train_examples": tr_stats["examples"], "eval_examples": va_stats["examples"] if va_stats else 0,
        "dropped_train": tr_stats["dropped"], "dropped_eval": va_stats["dropped"] if va_stats else 0,
        "truncated_train": tr_stats["truncated"], "truncated_eval": va_stats["truncated"] if va_stats else 0,
        "mean_tokens": round(tr_stats["mean_tokens"], 2), "max_tokens": tr_stats["max_tokens"],
        "total_tokens": tr_stats["total_tokens"], "loss_tokens": tr_stats["loss_tokens"], "max_length": max_length,
    }
    if names is not None:
        stats["label_names"] = names
    return tr, va, stats


class PackingCollator(DataCollatorWithFlattening):
    """Padding-free batches: one row of concatenated examples, position_ids restarting at 0 for each example.

    Adds ``use_cache=False`` to every batch: transformers separates packed examples (found from position_ids) only
    when the forward pass builds no KV cache; with a model's default ``use_cache=True`` attention leaks from one
    example into the next.
    """

    def __call__(self, features, return_tensors=None, separator_id=None):
        batch = super().__call__(features, return_tensors=return_tensors, separator_id=separator_id)
        batch["use_cache"] = False
        return batch


def make_collator(cfg: RunConfig, tokenizer, packing: bool | None = None, varlen: bool = False):
    """Batching: padding-free flattening (packing), padded causal-LM batches (labels padded with -100), or
    dynamic padding for classification. ``packing`` is the engine's resolved choice (default: only when
    ``data.packing`` is on); ``varlen`` adds the sequence boundaries a variable-length attention kernel reads."""
    prepare_tokenizer(tokenizer)
    if cfg.model.task == "seq-cls":
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    if cfg.data.packing == "on" if packing is None else packing:
        return PackingCollator(separator_id=IGNORE_INDEX, return_flash_attn_kwargs=varlen)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=8)


def _decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def segments_from_labels(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """Decoded runs of tokens, True where the labels carry loss."""
    out: list[tuple[str, bool]] = []
    run: list[int] = []
    cur: bool | None = None
    for tid, lab in zip(input_ids, labels):
        trains = lab != IGNORE_INDEX
        if cur is not None and trains != cur:
            out.append((_decode(tokenizer, run), cur))
            run = []
        run.append(tid)
        cur = trains
    if run:
        out.append((_decode(tokenizer, run), bool(cur)))
    return out


def preview(cfg: RunConfig, tokenizer, n: int = 3) -> list[PreviewExample]:
    """The first ``n`` usable rows of the training source as the model will see them."""
    train = _load_train_source(cfg)
    rows = train.select(range(min(n, len(train))))
    prepare_tokenizer(tokenizer)
    max_length = effective_max_length(cfg, tokenizer)
    out = []
    if cfg.model.task == "seq-cls":
        names = label_names(cfg, train)
        string_labels = _string_labels(cfg, train)
        ids = _label_ids(cfg, rows, names, string_labels, "the training data") if string_labels else \
            _ints(list(rows[cfg.data.label_column]), "data.label_column", cfg.data.label_column)
        for row, label_id in zip(rows, ids):
            full = tokenizer(str(row[cfg.data.text_column]))["input_ids"]
            kept = full[:max_length] if len(full) <= max_length else \
                tokenizer(str(row[cfg.data.text_column]), truncation=True, max_length=max_length)["input_ids"]
            label = names[label_id] if 0 <= label_id < len(names) else str(label_id)
            out.append(PreviewExample(segments=[(_decode(tokenizer, kept), False)], n_tokens=len(kept),
                                      truncated=len(full) > max_length, label=label, loss_tokens=0))
        return out
    bos = _adds_bos(tokenizer)
    for row in rows:
        enc = encode_row(cfg, tokenizer, row, max_length, bos)
        out.append(PreviewExample(segments=segments_from_labels(tokenizer, enc["input_ids"], enc["labels"]),
                                  n_tokens=len(enc["input_ids"]), truncated=enc["_truncated"],
                                  loss_tokens=enc["_n_loss"]))
    return out


__all__ = [
    "PreviewExample", "resolve_source", "load_splits", "prepare_tokenizer", "tokenize_splits", "label_names",
    "make_collator", "PackingCollator", "preview", "format_prompt", "available_samples", "check_columns",
    "IGNORE_INDEX",
]
