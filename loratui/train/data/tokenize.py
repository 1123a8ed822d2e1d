"""Tokenized train / validation sets with their stats (cached by datasets under a deterministic fingerprint)."""

from __future__ import annotations


from datasets import Dataset

from loratui.core.config import RunConfig
from loratui.core.errors import DataError
from loratui.train.data.sources import _fp, _tokenizer_key
from loratui.train.data.render import _adds_bos, _has_chat_template, effective_max_length, encode_row, prepare_tokenizer
from loratui.train.data.labels import encode_labels



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
    stats = split_stats(tr_stats, va_stats, max_length)
    if names is not None:
        stats["label_names"] = names
    return tr, va, stats


def _map_cls(cfg: RunConfig, tokenizer, ds: Dataset, max_length: int, desc: str) -> Dataset:
    """Each text tokenized once (truncated to max_length); whether it was cut comes from the fast tokenizer's
    overflow, so the text is not tokenized a second time just to count."""
    col, label = cfg.data.text_column, cfg.data.label_column
    ds = ds.select_columns([col, label])
    if label != "labels":
        ds = ds.rename_column(label, "labels")

    def fn(batch):
        texts = [str(t) for t in batch[col]]
        enc = tokenizer(texts, truncation=True, max_length=max_length)
        encodings = getattr(enc, "encodings", None)
        if encodings:
            cut = [bool(e.overflowing) for e in encodings]
        else:  # a slow tokenizer has no overflow record: count the full length
            cut = [len(f) > max_length for f in tokenizer(texts)["input_ids"]]
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "_truncated": cut,
                "_n_loss": [1] * len(texts), "_length": [len(x) for x in enc["input_ids"]]}

    return ds.map(fn, batched=True, batch_size=512, remove_columns=[col], desc=desc,
                  new_fingerprint=_fp(ds, "cls", col, max_length, _tokenizer_key(tokenizer)))


def _tokenize_cls(cfg, tokenizer, train, val, max_length):
    train, val, names = encode_labels(cfg, train, val)
    tr, tr_stats = _finish(_map_cls(cfg, tokenizer, train, max_length, "tokenizing train"), "train", "data.source")
    va, va_stats = None, None
    if val is not None:
        va, va_stats = _finish(_map_cls(cfg, tokenizer, val, max_length, "tokenizing validation"),
                               "validation", "data.validation_file")
    return tr, va, tr_stats, va_stats, names


def split_stats(tr_stats: dict, va_stats: dict | None, max_length: int) -> dict:
    """The ``started`` event's data_stats from the train and validation splits' own figures."""
    return {
        "train_examples": tr_stats["examples"], "eval_examples": va_stats["examples"] if va_stats else 0,
        "dropped_train": tr_stats["dropped"], "dropped_eval": va_stats["dropped"] if va_stats else 0,
        "truncated_train": tr_stats["truncated"], "truncated_eval": va_stats["truncated"] if va_stats else 0,
        "mean_tokens": round(tr_stats["mean_tokens"], 2), "max_tokens": tr_stats["max_tokens"],
        "total_tokens": tr_stats["total_tokens"], "loss_tokens": tr_stats["loss_tokens"], "max_length": max_length,
    }
