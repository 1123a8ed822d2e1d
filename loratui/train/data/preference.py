"""Preference rows (``data.format: preference``) checked and put in the shape TRL's preference trainers read.

Paired rows: prompt + chosen + rejected (dpo, orpo, kto). Unpaired rows: prompt + completion + label (kto only).
Each field is a string or chat messages. With a chat template the rows become conversations (the prompt a user turn,
``data.system_prompt`` before it; each answer an assistant turn), so the template is applied and only the answers
train (TRL masks the prompt); without one they stay plain text. Tokenizing is TRL's: here the rows are checked (one
line for a missing or empty field, identical answers, a bad label) and measured against ``data.max_length``: a row
whose prompt alone fills it is dropped, a longer one has its answers cut there (TRL's ``keep_start``), and the
stats say how many of each.
"""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from loratui.core.config import RunConfig
from loratui.core.errors import DataError
from loratui.train.data.render import _has_chat_template, _messages, effective_max_length, prepare_tokenizer
from loratui.train.data.tokenize import split_stats
from loratui.train.data.sources import _blank, _display

#: label values read as a good answer / a bad one (kto's unpaired rows)
_GOOD = (True, 1, "true", "yes", "good", "chosen", "1", "desirable")
_BAD = (False, 0, "false", "no", "bad", "rejected", "0", "undesirable")


def paired(cfg: RunConfig, ds: Dataset) -> bool:
    """Whether ``ds`` holds pairs (chosen + rejected) rather than unpaired rows (completion + label)."""
    d, cols = cfg.data, set(ds.column_names)
    if d.chosen_column in cols or d.rejected_column in cols:
        return True
    if d.completion_column in cols:
        return False
    return True  # neither: the paired columns are the ones to name in the error


def _columns(cfg: RunConfig, ds: Dataset, where: str) -> bool:
    d, cols = cfg.data, list(ds.column_names)
    is_paired = paired(cfg, ds)
    keys = ["prompt_column", "chosen_column", "rejected_column"] if is_paired else \
        ["prompt_column", "completion_column", "label_column"]
    for key in keys:
        if getattr(d, key) not in cols:
            hint = f"set data.{key} to one of the columns"
            if is_paired and key != "prompt_column" and d.completion_column in cols:
                hint = "give both chosen and rejected, or unpaired rows of completion + label (objective kto)"
            raise DataError(f"format preference needs column '{getattr(d, key)}', not found in {where} (columns: "
                            f"{', '.join(cols) or 'none'})", field=f"data.{key}", hint=hint)
    if not is_paired and cfg.method.objective != "kto":
        raise DataError(f"{where} holds unpaired rows (completion + label); objective {cfg.method.objective} learns "
                        f"from pairs", field="method.objective",
                        hint=f"use objective kto, or give {d.chosen_column} and {d.rejected_column} columns")
    return is_paired


def _field(value: Any, column: str, role: str, chat: bool) -> str | list[dict]:
    """One prompt or answer: the text, or (with a chat template) its messages. Raises ValueError saying what is
    wrong; the caller names the row."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError(f"'{column}' is empty")
        if not chat:
            raise ValueError(f"'{column}' holds chat messages but the tokenizer has no chat template")
        try:
            msgs = _messages(value, column)
        except DataError as err:
            raise ValueError(err.message) from None
        if all(_blank(m["content"]) for m in msgs):
            raise ValueError(f"'{column}' is empty")
        if role == "assistant" and any(m["role"] != "assistant" for m in msgs):
            raise ValueError(f"'{column}' holds a {next(m['role'] for m in msgs if m['role'] != 'assistant')} "
                             "message; an answer is the assistant's")
        if role == "user" and msgs[-1]["role"] == "assistant":
            raise ValueError(f"'{column}' ends with the assistant's turn; a prompt ends where the answer begins")
        return msgs
    if value is None:
        raise ValueError(f"'{column}' is missing")
    if not isinstance(value, str):
        raise ValueError(f"'{column}' holds a {type(value).__name__}, not text or messages")
    if _blank(value):
        raise ValueError(f"'{column}' is empty")
    return [{"role": role, "content": value}] if chat else value


def _label(value: Any, column: str) -> bool:
    key = value.strip().lower() if isinstance(value, str) else value
    if isinstance(key, float) and key in (0.0, 1.0):
        key = int(key)
    if key in _GOOD:
        return True
    if key in _BAD:
        return False
    raise ValueError(f"'{column}' is {value!r}; a label is true (a good answer) or false (a bad one)")


def _rows(cfg: RunConfig, ds: Dataset, chat: bool, is_paired: bool, where: str) -> list[dict]:
    """The rows in TRL's shape. The first bad row is a one-line DataError naming the row, the field and how many rows
    share the problem."""
    d = cfg.data
    system = [{"role": "system", "content": d.system_prompt}] if chat and d.system_prompt else []
    out, bad = [], []
    for i, row in enumerate(ds):
        try:
            prompt = _field(row.get(d.prompt_column), d.prompt_column, "user", chat)
            if chat and system and prompt[0]["role"] != "system":
                prompt = system + prompt
            if is_paired:
                chosen = _field(row.get(d.chosen_column), d.chosen_column, "assistant", chat)
                rejected = _field(row.get(d.rejected_column), d.rejected_column, "assistant", chat)
                if chosen == rejected:
                    raise ValueError(f"'{d.chosen_column}' and '{d.rejected_column}' are the same answer; a pair "
                                     "must differ")
                out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            else:
                completion = _field(row.get(d.completion_column), d.completion_column, "assistant", chat)
                out.append({"prompt": prompt, "completion": completion,
                            "label": _label(row.get(d.label_column), d.label_column)})
        except ValueError as err:
            bad.append((i, str(err)))
    if bad:
        i, why = bad[0]
        same = sum(1 for _, w in bad if w == why)
        more = f" ({same} of {len(ds)} rows)" if same > 1 else ""
        others = f"; {len(bad) - same} other bad rows" if len(bad) > same else ""
        raise DataError(f"{where} row {i + 1}: {why}{more}{others}", field=_field_of(cfg, why),
                        hint="fix or remove those rows")
    return out


def check_rows(cfg: RunConfig, ds: Dataset, where: str) -> None:
    """Every row of a source as it is in the file (before the validation split), so a bad row is named by its line
    there. Chat messages pass here; whether the tokenizer can render them is checked when the rows are prepared."""
    _rows(cfg, ds, True, _columns(cfg, ds, where), where)


def _field_of(cfg: RunConfig, why: str) -> str:
    d = cfg.data
    for key in ("chosen_column", "rejected_column", "completion_column", "label_column", "prompt_column"):
        if f"'{getattr(d, key)}'" in why:
            return f"data.{key}"
    return "data.source"


def _lengths(tokenizer, rows: list[dict], chat: bool) -> tuple[list[int], list[int]]:
    """Tokens of each row's prompt and of its prompt + longest answer, as TRL tokenizes them (the chat template with
    the generation prompt for the prompt alone; plain text with the eos token appended to answers)."""
    answers = ("chosen", "rejected") if "chosen" in rows[0] else ("completion",)
    if chat:
        prompts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in rows]
        fulls = {a: [tokenizer.apply_chat_template(r["prompt"] + r[a], tokenize=False) for r in rows]
                 for a in answers}
        special = False
    else:
        eos = tokenizer.eos_token or ""
        prompts = [r["prompt"] for r in rows]
        fulls = {a: [r["prompt"] + r[a] + ("" if r[a].endswith(eos) else eos) for r in rows] for a in answers}
        special = True
    n_prompt = [len(x) for x in tokenizer(prompts, add_special_tokens=special)["input_ids"]]
    n_full = [0] * len(rows)
    for a in answers:
        for j, ids in enumerate(tokenizer(fulls[a], add_special_tokens=special)["input_ids"]):
            n_full[j] = max(n_full[j], len(ids))
    return n_prompt, n_full


def _measure(tokenizer, rows: list[dict], chat: bool, max_length: int, split: str) -> tuple[Dataset, dict]:
    n_prompt, n_full = _lengths(tokenizer, rows, chat)
    keep = [j for j, p in enumerate(n_prompt) if p < max_length]
    if not keep:
        raise DataError(f"every {split} row's prompt alone fills data.max_length ({max_length} tokens): no answer "
                        f"token is left to learn from", field="data.max_length",
                        hint="raise data.max_length or shorten the prompts")
    cut = sum(1 for j in keep if n_full[j] > max_length)
    lengths = [min(n_full[j], max_length) for j in keep]
    pairs = 2 if "chosen" in rows[0] else 1
    stats = {"examples": len(keep), "dropped": len(rows) - len(keep), "truncated": cut,
             "mean_tokens": sum(lengths) / len(lengths), "max_tokens": max(lengths), "total_tokens": sum(lengths),
             "loss_tokens": sum(pairs * (min(n_full[j], max_length) - n_prompt[j]) for j in keep)}
    kept = [rows[j] for j in keep]
    return Dataset.from_list(kept), stats


def prepare_splits(cfg: RunConfig, tokenizer, train: Dataset, val: Dataset | None
                   ) -> tuple[Dataset, Dataset | None, dict]:
    """Train / validation rows in TRL's shape (untokenized: the trainer tokenizes) and their stats, with the keys
    ``tokenize_splits`` gives plus ``paired``. DataError (one line) for bad rows and when nothing fits."""
    d = cfg.data
    where = _display(d.source)
    val_where = _display(d.validation_file) if d.validation_file else f"the held-out part of {where}"
    prepare_tokenizer(tokenizer)
    chat = _has_chat_template(tokenizer)
    max_length = effective_max_length(cfg, tokenizer)
    is_paired = _columns(cfg, train, where)
    tr, tr_stats = _measure(tokenizer, _rows(cfg, train, chat, is_paired, where), chat, max_length, "train")
    va, va_stats = None, None
    if val is not None:
        if _columns(cfg, val, val_where) != is_paired:
            raise DataError(f"{val_where} holds {'pairs' if not is_paired else 'unpaired rows'} but {where} does "
                            f"not", field="data.validation_file", hint="give both in the same shape")
        va, va_stats = _measure(tokenizer, _rows(cfg, val, chat, is_paired, val_where), chat, max_length,
                                "validation")
    stats = {**split_stats(tr_stats, va_stats, max_length), "paired": is_paired}
    return tr, va, stats


def length_note(stats: dict) -> str | None:
    """One line on the rows ``data.max_length`` cut or dropped, or None when every row fits."""
    parts = []
    for split in ("train", "eval"):
        cut, dropped = stats.get(f"truncated_{split}", 0), stats.get(f"dropped_{split}", 0)
        if cut or dropped:
            name = "training" if split == "train" else "validation"
            bits = [f"{cut} cut at {stats['max_length']} tokens (their answers' ends are not trained)"] if cut else []
            bits += [f"{dropped} dropped (the prompt alone fills it)"] if dropped else []
            parts.append(f"{name} rows over data.max_length: " + ", ".join(bits))
    return "; ".join(parts) or None


def preview_examples(cfg: RunConfig, tokenizer, rows: Dataset) -> list:
    """What Setup shows for preference rows: each answer after its prompt as the model reads it (the prompt
    untrained, the answer trained), labelled chosen / rejected (or good / bad for unpaired rows)."""
    from loratui.train.data.sources import PreviewExample

    prepare_tokenizer(tokenizer)
    chat = _has_chat_template(tokenizer)
    max_length = effective_max_length(cfg, tokenizer)
    out = []
    for row in _rows(cfg, rows, chat, _columns(cfg, rows, _display(cfg.data.source)), _display(cfg.data.source)):
        answers = [("chosen", row["chosen"]), ("rejected", row["rejected"])] if "chosen" in row else \
            [("good" if row["label"] else "bad", row["completion"])]
        for label, answer in answers:
            if chat:
                prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
                full = tokenizer.apply_chat_template(row["prompt"] + answer, tokenize=False)
            else:
                prompt, full = row["prompt"], row["prompt"] + answer + (tokenizer.eos_token or "")
            n_prompt = len(tokenizer(prompt, add_special_tokens=not chat)["input_ids"])
            n = len(tokenizer(full, add_special_tokens=not chat)["input_ids"])
            kept = min(n, max_length)
            out.append(PreviewExample(segments=[(prompt, False), (full[len(prompt):], True)], n_tokens=kept,
                                      truncated=n > max_length, label=label, loss_tokens=max(0, kept - n_prompt)))
    return out

