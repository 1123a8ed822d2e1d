"""Rows rendered as the model will read them (text, Alpaca prompt or chat template) with the loss mask: which tokens carry loss."""

from __future__ import annotations

from typing import Any


from loratui.core.config import RunConfig
from loratui.core.errors import DataError
from loratui.train.data.sources import _blank, _first_cause


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
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "tool": "tool", "function": "tool", "bing": "assistant", "chatgpt": "assistant"}


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
