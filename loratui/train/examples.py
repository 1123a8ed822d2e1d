"""Examples and their scoring, as the Playground and the GGUF export's check use them: held-out files read into
examples, an example rendered as the model sees it, exact / valid-JSON answers, macro F1. Light (no torch)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from loratui.core.errors import LoratuiError


def valid_json(text: str) -> bool:
    try:
        json.loads(text.strip())
        return True
    except (ValueError, TypeError):
        return False


def exact(answer: str, reference: str) -> bool:
    return answer.strip() == reference.strip()


def macro_f1(preds: list[str], refs: list[str]) -> float:
    labels = sorted(set(refs) | set(preds))
    scores = []
    for lab in labels:
        tp = sum(p == lab and r == lab for p, r in zip(preds, refs))
        fp = sum(p == lab and r != lab for p, r in zip(preds, refs))
        fn = sum(p != lab and r == lab for p, r in zip(preds, refs))
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        scores.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def render_example(tok, example: dict, chat_template: bool = True, system: str | None = None) -> str:
    """An example (messages, alpaca fields or a prompt) as the model sees it: its chat template when it has one
    (``system`` first), else the prompt the engine trained on."""
    has_template = bool(getattr(tok, "chat_template", None))
    if "messages" in example:
        msgs = list(example["messages"])
        if has_template and chat_template:
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return "\n".join(m["content"] for m in msgs)
    if "instruction" in example:
        from loratui.train.data import _user_text, alpaca_prompt

        if has_template and chat_template:
            msgs = ([{"role": "system", "content": system}] if system else [])
            msgs.append({"role": "user", "content": _user_text(example["instruction"], example.get("input"))})
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return alpaca_prompt(example["instruction"], example.get("input"))
    prompt = example.get("prompt", "")
    if chat_template and has_template:
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return prompt


# -- held-out files -----------------------------------------------------------------------------------------------

def read_examples(path: str, n: int, cfg=None) -> list[dict]:
    """Up to ``n`` examples as {prompt | instruction+input | messages | text, reference}; with a run's config
    ``cfg``, its rows are read under the run's column names (``data.*_column``), as the run trained on them."""
    from loratui.train.data import resolve_source

    real = Path(resolve_source(path)).expanduser()
    if not real.is_file():
        raise LoratuiError(f"no such file {path}", field="batch file", hint="give a .jsonl, .json or .csv file")
    rows: list[dict]
    if real.suffix == ".csv":
        with open(real, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    elif real.suffix == ".json":
        data = json.loads(real.read_text())
        rows = data if isinstance(data, list) else data.get("data", [])
    else:
        rows = [json.loads(line) for line in real.read_text().splitlines() if line.strip()]
    out = examples_from_rows(rows[:n], cfg)
    if not out:
        raise LoratuiError(f"{path} holds no examples this playground can read", field="batch file",
                           hint="alpaca (instruction/input/output), chat (messages), text+label, or prompt+response")
    return out


def held_out_rows(cfg):
    """The rows a run held out of its data (``validation_fraction``): the split the engine makes (``data.load_splits``,
    the run's seed), as a dataset; None for a run with a validation file or nothing held out."""
    from loratui.train.data import load_splits

    if cfg.data.validation_file or not cfg.data.validation_fraction > 0:
        return None
    return load_splits(cfg)[1]


def held_out_examples(cfg, n: int, rows=None) -> list[dict]:
    """The first ``n`` rows the run held out of its data (:func:`held_out_rows`, or ``rows`` already made from it),
    read into examples under the run's column names."""
    rows = held_out_rows(cfg) if rows is None else rows
    if rows is None:
        return []
    return examples_from_rows([rows[i] for i in range(min(n, len(rows)))], cfg)


def run_columns(cfg) -> dict[str, str]:
    """A run's column names (``data.*_column``) -> the standard names :func:`examples_from_rows` reads."""
    d = cfg.data
    return {d.instruction_column: "instruction", d.input_column: "input", d.output_column: "output",
            d.messages_column: "messages", d.prompt_column: "prompt", d.completion_column: "response",
            d.text_column: "text", d.label_column: "label"}


def examples_from_rows(rows: list[dict], cfg=None) -> list[dict]:
    """Rows (alpaca, chat, text+label or prompt+response columns) as examples; rows of none of these are left out.
    With a run's config ``cfg``, the rows' columns are the run's (:func:`run_columns`)."""
    if cfg is not None:
        names = run_columns(cfg)
        rows = [{names.get(k, k): v for k, v in row.items()} for row in rows]
    out = []
    for row in rows:
        if "messages" in row:
            msgs = row["messages"]
            last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
            if last is None:
                continue
            out.append({"messages": msgs[:last], "reference": msgs[last]["content"],
                        "shown": msgs[last - 1]["content"] if last else ""})
        elif "instruction" in row:
            out.append({"instruction": row["instruction"], "input": row.get("input") or "",
                        "reference": row.get("output", ""), "shown": row.get("input") or row["instruction"]})
        elif "text" in row and "label" in row:
            out.append({"text": row["text"], "reference": str(row["label"]), "shown": row["text"]})
        elif "prompt" in row:
            out.append({"prompt": row["prompt"], "reference": str(row.get("response") or row.get("output") or ""),
                        "shown": row["prompt"]})
    return out
