"""Batching: padding-free packed rows (with the sequence boundaries varlen attention reads), padded causal-LM batches, or dynamic padding for classification."""

from __future__ import annotations


from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, DataCollatorWithPadding

from loratui.core.config import RunConfig
from loratui.train.data.render import IGNORE_INDEX, prepare_tokenizer



class PackingCollator(DataCollatorWithFlattening):
    """Padding-free batches: one row of concatenated examples, position_ids restarting at 0 for each example.

    Adds ``use_cache=False`` to every batch: transformers separates packed examples (found from position_ids) only
    when the forward pass builds no KV cache; with a model's default ``use_cache=True`` attention leaks from one
    example into the next.
    """

    def __init__(self, *args, graph_rows: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.graph_rows = graph_rows  # CUDA graphs: padded to a bucket, boundaries of fixed length (graphs.pad_packed)

    def __call__(self, features, return_tensors=None, separator_id=None):
        batch = super().__call__(features, return_tensors=return_tensors, separator_id=separator_id)
        batch["use_cache"] = False
        if self.graph_rows:
            from loratui.train.graphs import pad_packed

            pad_packed(batch, self.graph_rows)
        return batch


def make_collator(cfg: RunConfig, tokenizer, packing: bool | None = None, varlen: bool = False,
                  graphs: bool = False):
    """Batching: padding-free flattening (packing), padded causal-LM batches (labels padded with -100), or
    dynamic padding for classification. ``packing`` is the engine's resolved choice (default: only when
    ``data.packing`` is on); ``varlen`` adds the sequence boundaries a variable-length attention kernel reads."""
    prepare_tokenizer(tokenizer)
    if cfg.model.task == "seq-cls":
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    if cfg.data.packing == "on" if packing is None else packing:
        return PackingCollator(separator_id=IGNORE_INDEX, return_flash_attn_kwargs=varlen,
                               graph_rows=max(cfg.train.batch_size, cfg.train.eval_batch_size or 0) if graphs else None)
    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=8)
