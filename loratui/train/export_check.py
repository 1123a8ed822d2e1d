"""What a GGUF export is checked against: held-out prompts (the run's validation file by default), the merged
model's greedy answers to them (the reference llama.cpp must reproduce), and the one tokenizer fix-up the
converter needs for tokenizers that transformers rebuilt from a GGUF file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from loratui.core.errors import LoratuiError
from loratui.core.export import GENERAL_PROMPTS, held_out_description, run_config_path

#: prompts for a model without a run (a merged folder from elsewhere) and no --prompts file
GENERIC_PROMPTS = ("What is the capital of France?", "Write a haiku about the sea.",
                   "List three prime numbers.", "Explain what a LoRA adapter is in one sentence.",
                   "Translate 'good morning' into Spanish.")


def run_config(folder: Path):
    """The config of the run an adapter (runs/NAME/adapter) or a merged model (its loratui-merge.json) came from."""
    from loratui.core.config import load_config

    path = run_config_path(folder)
    if path is None:
        return None
    try:
        return load_config(path)
    except LoratuiError:
        return None


def find_examples(folder: Path, prompts: str | None, n: int) -> tuple[list[dict], str | None, str | None, str]:
    """(examples, the run's system prompt, the file they came from or None, where they came from in words):
    --prompts FILE, else the held-out set of the run behind the model (its validation file, or the split it held out
    of its data), else a few general prompts (``GENERAL_PROMPTS`` says so)."""
    from loratui.train.examples import held_out_examples, read_examples

    if n < 1:
        raise LoratuiError(f"{n} prompts", field="--prompts", hint="check the export on at least 1 prompt")
    cfg = run_config(folder)
    system = cfg.data.system_prompt if cfg is not None else None
    source = prompts or (cfg.data.validation_file if cfg is not None else None)
    if source:
        try:
            examples = read_examples(source, n, None if prompts else cfg)  # the run's file: its columns
        except LoratuiError as err:
            raise LoratuiError(err.message, field="--prompts-file", hint=err.hint) from None
        examples = [e for e in examples if "text" not in e]  # text+label rows belong to classifiers
        if examples:
            return examples, system, source, source if prompts else held_out_description(cfg)
    elif cfg is not None and cfg.data.validation_fraction > 0:
        try:
            examples = [e for e in held_out_examples(cfg, n) if "text" not in e]
        except LoratuiError:
            examples = []  # the run's data is gone or unreadable: general prompts, and the report says so
        if examples:
            return examples, system, None, held_out_description(cfg)
    return [{"prompt": p, "reference": ""} for p in GENERIC_PROMPTS[:n]], system, None, GENERAL_PROMPTS


def prompt_progress(progress, start: float = 0.3, share: float = 0.1):
    """``each(done, total)`` for :func:`reference_answers`: ``progress('...: done/total', fraction)`` about ten
    times over the prompts, the last one included (it went from 4/5 straight to the next stage: QA walk)."""
    def each(done: int, total: int) -> None:
        if done % max(1, total // 10) == 0 or done == total:
            progress(f"answering the held-out prompts (merged model): {done}/{total}", start + share * done / total)

    return each


def reference_answers(model, tok, examples: list[dict], system: str | None, max_new_tokens: int,
                      each=lambda done, total: None) -> dict:
    """The merged model's greedy answer to each prompt, as token ids and text (transformers, on this machine);
    ``each(done, total)`` after every prompt."""
    import torch

    from loratui.train.examples import render_example

    eos = model.generation_config.eos_token_id
    eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []),
                      *([tok.eos_token_id] if tok.eos_token_id is not None else [])})
    out, tokens, seconds = [], 0, 0.0
    for ex in examples:
        text = render_example(tok, ex, True, system)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        t0 = time.time()
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos_ids or None,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else (eos_ids or [0])[0])
        seconds += time.time() - t0
        answer = gen[0][len(ids):].tolist()
        tokens += len(answer)
        answer_text = tok.decode(answer, skip_special_tokens=True).strip()
        reference = str(ex.get("reference") or "")
        out.append({"prompt_text": text, "prompt_ids": ids, "answer_ids": answer, "answer_text": answer_text,
                    "reference": reference, "exact": (answer_text == reference.strip()) if reference else None})
        each(len(out), len(examples))
    return {"prompts": out, "eos_ids": eos_ids, "max_new_tokens": max_new_tokens,
            "tokens_per_s": tokens / seconds if seconds else None}


def normalize_tokenizer(folder: Path) -> str | None:
    """A byte-level BPE tokenizer that transformers rebuilt from a GGUF file (the embedded SmolLM2 and every
    adapter trained on it) carries a byte-fallback flag and a SentencePiece-style decoder that its vocabulary
    never uses; llama.cpp's converter then takes it for a SentencePiece vocabulary and writes a file llama.cpp
    cannot load. Dropping the two unused parts leaves the tokenization unchanged (the export's check compares
    the token ids) and lets the converter recognise it. Returns what was changed, or None."""
    path = folder / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model, decoder, pre = data.get("model") or {}, data.get("decoder") or {}, data.get("pre_tokenizer") or {}
    pre_types = {pre.get("type")} | {p.get("type") for p in pre.get("pretokenizers") or []}
    parts = decoder.get("decoders") or []
    byte_level = [d for d in parts if d.get("type") == "ByteLevel"]
    if not (model.get("type") == "BPE" and model.get("byte_fallback") and "ByteLevel" in pre_types
            and decoder.get("type") == "Sequence" and byte_level):
        return None
    model["byte_fallback"] = False
    data["decoder"] = byte_level[0]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return "tokenizer.json: byte-level BPE without the unused byte-fallback decoder (as the converter expects)"
