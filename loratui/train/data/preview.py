"""What the setup screen shows before launch: the first rows as the model will see them."""

from __future__ import annotations



from loratui.core.config import RunConfig
from loratui.train.data.sources import PreviewExample, _load_train_source
from loratui.train.data.render import IGNORE_INDEX, _adds_bos, effective_max_length, encode_row, prepare_tokenizer
from loratui.train.data.labels import label_names



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
        col = cfg.data.label_column
        ids = [names.index(v.strip()) if isinstance(v, str) else int(v) for v in rows[col]]
        for row, label_id in zip(rows, ids):
            full = tokenizer(str(row[cfg.data.text_column]))["input_ids"]
            kept = full[:max_length] if len(full) <= max_length else \
                tokenizer(str(row[cfg.data.text_column]), truncation=True, max_length=max_length)["input_ids"]
            label = names[label_id] if 0 <= label_id < len(names) else str(label_id)
            out.append(PreviewExample(segments=[(_decode(tokenizer, kept), False)], n_tokens=len(kept),
                                      truncated=len(full) > max_length, label=label, loss_tokens=0))
        return out
    if cfg.data.format == "preference":
        from loratui.train.data.preference import preview_examples

        return preview_examples(cfg, tokenizer, rows)
    bos = _adds_bos(tokenizer)
    for row in rows:
        enc = encode_row(cfg, tokenizer, row, max_length, bos)
        out.append(PreviewExample(segments=segments_from_labels(tokenizer, enc["input_ids"], enc["labels"]),
                                  n_tokens=len(enc["input_ids"]), truncated=enc["_truncated"],
                                  loss_tokens=enc["_n_loss"]))
    return out
