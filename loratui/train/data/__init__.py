"""Datasets for a run: load the rows, render them in the chosen format, tokenize with loss masks, batch them.

One module per concern: ``sources`` (files, samples, hub datasets, the validation split), ``render`` (prompts, chat
templates, loss masks), ``labels`` (classification labels), ``tokenize`` (tokenized splits and their stats, cached),
``collate`` (batching), ``preview`` (what Setup shows).

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

from loratui.train.data.collate import PackingCollator, make_collator
from loratui.train.data.labels import label_names
from loratui.train.data.preview import preview, segments_from_labels
from loratui.train.data.render import (IGNORE_INDEX, _adds_bos, _has_chat_template, _user_text, alpaca_messages,
                                       alpaca_prompt, chat_segments, effective_max_length, encode_row, format_prompt,
                                       prepare_tokenizer, row_segments)
from loratui.train.data.sources import (FILE_BUILDERS, SAMPLES_DIR, PreviewExample, _drop_empty, _load_train_source,
                                        available_samples, check_columns, load_splits, resolve_source)
from loratui.train.data.tokenize import tokenize_splits

__all__ = [
    "PreviewExample", "resolve_source", "load_splits", "prepare_tokenizer", "tokenize_splits", "label_names",
    "make_collator", "PackingCollator", "preview", "format_prompt", "available_samples", "check_columns",
    "IGNORE_INDEX", "alpaca_prompt", "alpaca_messages", "chat_segments", "row_segments", "encode_row",
    "effective_max_length", "segments_from_labels", "FILE_BUILDERS", "SAMPLES_DIR",
    # used by preflight, the estimate and the playground across the package's modules
    "_adds_bos", "_has_chat_template", "_user_text", "_drop_empty", "_load_train_source",
]
