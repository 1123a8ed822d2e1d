"""How many tokens the largest training (and evaluation) step of a run holds, measured on a sample of its data with
its tokenizer: packed, the sum over the batch at the size the largest of the planned steps reaches; padded, batch x the
longest example. The memory estimate (loratui.train.estimate) and the memory fit (loratui.train.fit) read it."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

from loratui.core.config import RunConfig


@dataclass
class StepTokens:
    """How many tokens the largest training (and evaluation) step holds, and how that was worked out."""

    train: int
    eval: int
    longest_row: int  # the longest example (tokens), for the attention mask of padded or packed rows
    note: str
    measured: bool  # False: no data sample, max_length assumed


PACK_MARGIN = 8  # packed steps: the largest step of this many runs of the planned length (see _largest_sum)


def _planned_steps(cfg: RunConfig, rows: int | None) -> int:
    t = cfg.train
    micro = max(1, t.grad_accum)
    if t.max_steps:
        return t.max_steps * micro
    if rows:
        return max(1, int(t.epochs * math.ceil(rows / t.batch_size)))
    return 100


LARGE_SOURCE = 64 * 2**20  # bytes: a bigger source is sampled from its first rows (streamed), not loaded whole


HEAD_ROWS = 4000


SAMPLE_ROWS = 384  # rows tokenized (evenly spaced) for the length distribution


SCAN_ROWS = 20_000  # rows whose character length is read to find the longest ones


LONGEST_ROWS = 12  # the longest rows by characters, tokenized exactly


_LENGTHS: dict[tuple, tuple[list[int], int, int, bool] | str] = {}


def _source_key(cfg: RunConfig) -> tuple | str:
    """A cache key for the training source, or why it can't be read cheaply."""
    from loratui.train import data

    src = data.resolve_source(cfg.data.source)
    path = Path(src)
    if path.is_absolute() and not path.exists():
        return f"the data ({cfg.data.source}): no such file here"
    if not path.is_absolute():
        return f"the data ({cfg.data.source}) is not a local file"
    st = path.stat()
    d = cfg.data
    fields = (d.format, d.split, d.text_column, d.instruction_column, d.input_column, d.output_column,
              d.messages_column, d.system_prompt, d.max_samples, cfg.method.objective)
    return (str(path), st.st_mtime_ns, st.st_size, cfg.model.name, cfg.model.task, fields, d.max_length)


def sample_lengths(cfg: RunConfig) -> tuple[list[int], int, int, bool] | str:
    """Token lengths of a sample of the training rows as the engine encodes them (capped at max_length), the
    longest row's length, the number of rows and whether only the first rows were read (a large source); or a
    sentence saying why not. Cached per source file and settings.
    """
    key = _source_key(cfg)
    if isinstance(key, str):
        return key
    if key not in _LENGTHS:
        try:
            _LENGTHS[key] = _read_lengths(cfg)
        except Exception as err:  # noqa: BLE001 - the estimate falls back to max_length and says why
            from loratui.core.errors import LoratuiError

            # a loratui error is already one line with its fix, said whole ('columns: instruction, input, output'
            # was cut to 'ou' and the hint lost); anything else is cut at a word, to one line's worth
            why = str(err) if isinstance(err, LoratuiError) else textwrap.shorten(f"{type(err).__name__}: {err}", 160, placeholder=" …")
            return f"the data could not be sampled ({why})"
        if len(_LENGTHS) > 32:
            _LENGTHS.pop(next(iter(_LENGTHS)))
    return _LENGTHS[key]


def _train_rows(cfg: RunConfig):
    """The training rows (datasets.Dataset), their number, and whether only the first rows were read."""
    import itertools
    import json

    import datasets

    from loratui.train import data

    path = Path(data.resolve_source(cfg.data.source))
    files = [path] if path.is_file() else [f for f in itertools.islice(path.rglob("*"), 10_000) if f.is_file()]
    size = sum(f.stat().st_size for f in files)
    if size <= LARGE_SOURCE:
        ds = data._load_train_source(cfg)
        return ds, len(ds), False
    builder = data.FILE_BUILDERS.get(path.suffix.lower()) if path.is_file() else None
    if builder:
        stream = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True)
    else:
        stream = datasets.load_dataset(str(path), cfg.data.subset, split=cfg.data.split, streaming=True)
    rows = list(itertools.islice(stream, HEAD_ROWS))
    ds = datasets.Dataset.from_list(rows)
    where = path.name
    data.check_columns(cfg, ds, where)
    ds = data._drop_empty(cfg, ds, where, "data.source")
    per_row = sum(len(json.dumps(r, default=str)) for r in rows) / max(len(rows), 1)
    return ds, max(len(rows), int(size / max(per_row, 1))), True


def _length_fn(cfg: RunConfig, ds, tokenizer, max_length: int):
    """(lengths(idx), chars(idx)): the token lengths the engine gives rows ``idx`` of ``ds`` (capped at max_length),
    and a cheap character length to find the longest rows by."""
    from loratui.train import data

    if cfg.model.task == "seq-cls":
        col = cfg.data.text_column

        def texts(idx: list[int]) -> list[str]:
            return [str(t) for t in ds.select(idx)[col]]

        def lengths(idx: list[int]) -> list[int]:
            return [min(len(x), max_length) for x in tokenizer(texts(idx))["input_ids"]] if idx else []

        return lengths, lambda idx: [len(t) for t in texts(idx)]
    if cfg.data.format == "preference":
        return _preference_length_fn(cfg, ds, tokenizer, max_length)
    # the text each row becomes (the engine's own rendering), tokenized in one batch: the same ids encode_row gets
    # from a fast tokenizer, without its per-token label bookkeeping
    bos = data._adds_bos(tokenizer) and not (cfg.data.format != "text" and data._has_chat_template(tokenizer))

    def texts(idx: list[int]) -> list[str]:
        return ["".join(s for s, _ in data.row_segments(cfg, tokenizer, row)) for row in ds.select(idx)]

    def lengths(idx: list[int]) -> list[int]:
        if not idx:
            return []
        ids = tokenizer(texts(idx), add_special_tokens=False)["input_ids"]
        return [min(len(x) + bos, max_length) for x in ids]

    if cfg.data.format == "text":
        col = cfg.data.text_column
        return lengths, lambda idx: [len(str(t)) for t in ds.select(idx)[col]]
    return lengths, lambda idx: [len(t) for t in texts(idx)]


def _preference_length_fn(cfg: RunConfig, ds, tokenizer, max_length: int):
    """Preference rows as TRL's trainers tokenize them (loratui.train.data.preference): a row's length is its prompt
    with its longer answer (a pair's chosen and rejected are padded to one length)."""
    from loratui.train.data import preference as pref
    from loratui.train.data.render import _has_chat_template

    chat = _has_chat_template(tokenizer)
    is_paired = pref._columns(cfg, ds, "data.source")

    def rows(idx: list[int]) -> list[dict]:
        return pref._rows(cfg, ds.select(idx), chat, is_paired, "data.source")

    def lengths(idx: list[int]) -> list[int]:
        return [min(n, max_length) for n in pref._lengths(tokenizer, rows(idx), chat)[1]] if idx else []

    def chars(idx: list[int]) -> list[int]:
        return [len(str(r["prompt"])) + max(len(str(r.get(a, ""))) for a in ("chosen", "rejected", "completion"))
                for r in rows(idx)]

    return lengths, chars


def sequences_per_example(cfg: RunConfig) -> int:
    """Sequences the model runs with gradients for each example of a step: a pair's chosen and rejected answers
    (dpo, orpo; kto reads a pair as two unpaired rows), else one."""
    return 2 if cfg.method.objective in ("dpo", "orpo", "kto") and cfg.data.format == "preference" else 1


def _read_lengths(cfg: RunConfig) -> tuple[list[int], int, int, bool]:
    from loratui.train import data, models

    ds, n_rows, head_only = _train_rows(cfg)
    if cfg.data.max_samples is not None and cfg.data.max_samples < len(ds):
        ds = ds.select(range(cfg.data.max_samples))
    if cfg.data.max_samples is not None:
        n_rows = min(n_rows, cfg.data.max_samples)
    n = len(ds)
    tokenizer = data.prepare_tokenizer(models.load_tokenizer(cfg))
    max_length = data.effective_max_length(cfg, tokenizer)
    lengths, chars_of = _length_fn(cfg, ds, tokenizer, max_length)

    def spaced(count: int) -> list[int]:
        return sorted({int(k * n / count) for k in range(count)}) if n > count else list(range(n))

    # a chat template renders each row: fewer rows scanned
    scan = spaced(SCAN_ROWS if cfg.model.task == "seq-cls" or cfg.data.format == "text" else 2000)
    chars = chars_of(scan)
    longest_idx = [scan[j] for j in sorted(range(len(scan)), key=lambda j: -chars[j])[:LONGEST_ROWS]]
    sample = lengths(spaced(SAMPLE_ROWS))
    longest = max(lengths(longest_idx) + sample, default=0)
    return sample, longest, n_rows, head_only


EVAL_ROWS = 5000  # a held-out split up to this size is measured row by row (its batches exactly)


_EVAL_LENGTHS: dict[tuple, list[int] | None] = {}


def eval_lengths(cfg: RunConfig) -> list[int] | None:
    """Token lengths of the held-out rows in the order evaluation reads them (sequentially, every evaluation the
    same): the split the run holds out of its source (``validation_fraction``, with the run's seed) or its local
    validation file, as the engine loads them (``data.load_splits``); None when that can't be known cheaply (a
    large or remote source, a very large held-out set)."""
    from loratui.train import data

    d = cfg.data
    key = _source_key(cfg)
    if isinstance(key, str) or not (d.validation_file or d.validation_fraction):
        return None
    if d.validation_file:
        val = Path(data.resolve_source(d.validation_file))
        if not val.is_file() or val.stat().st_size > LARGE_SOURCE:
            return None
        key = (key, str(val), val.stat().st_mtime_ns)
    else:
        key = (key, d.validation_fraction, cfg.train.seed)
    if key not in _EVAL_LENGTHS:
        _EVAL_LENGTHS[key] = None
        try:
            _EVAL_LENGTHS[key] = _read_eval_lengths(cfg)
        except Exception:  # noqa: BLE001 - the estimate falls back to the sampled distribution
            pass
        if len(_EVAL_LENGTHS) > 32:
            _EVAL_LENGTHS.pop(next(iter(_EVAL_LENGTHS)))
    return _EVAL_LENGTHS[key]


def _read_eval_lengths(cfg: RunConfig) -> list[int] | None:
    from loratui.train import data, models

    path = Path(data.resolve_source(cfg.data.source))
    if not path.is_file() or path.stat().st_size > LARGE_SOURCE:
        return None
    _train, val = data.load_splits(cfg)
    if val is None or len(val) > EVAL_ROWS:
        return None
    tokenizer = data.prepare_tokenizer(models.load_tokenizer(cfg))
    lengths, _ = _length_fn(cfg, val, tokenizer, data.effective_max_length(cfg, tokenizer))
    return lengths(list(range(len(val))))


def eval_batch_tokens(lengths: list[int], batch: int, packing: bool) -> int:
    """Tokens in the largest evaluation batch: consecutive rows, packed into one row or padded to the longest (to a
    multiple of 8, as the collator pads)."""
    chunks = [lengths[i:i + batch] for i in range(0, len(lengths), max(batch, 1))]
    if packing:
        return max((sum(c) for c in chunks), default=0)
    return max((len(c) * (-(-max(c) // 8) * 8) for c in chunks), default=0)


def _largest_sum(sample: list[int], batch: int, steps: int, margin: int = PACK_MARGIN) -> float:
    """The largest packed step among ``steps`` random batches, with margin: the sum of ``batch`` lengths drawn from the
    sample (a fixed seed: the estimate is the same every time) at the quantile 1 - 1/(PACK_MARGIN x steps), i.e. the
    longest step of PACK_MARGIN runs this long. Sums of a few long-tailed lengths are skewed: a normal approximation
    sits well under the real largest step at small batches."""
    q = min(1 - 1e-9, max(0.5, 1 - 1 / (margin * max(steps, 1))))
    draws = min(200_000, 8_000_000 // max(batch, 1))
    if draws < 2_000:  # big batches: the sum is close to normal, and drawing it would cost too much
        from statistics import NormalDist, fmean, pstdev

        return batch * fmean(sample) + NormalDist().inv_cdf(q) * math.sqrt(batch) * pstdev(sample)
    import numpy as np

    sums = np.random.default_rng(0).choice(np.asarray(sample), size=(draws, batch)).sum(axis=1)
    return float(np.quantile(sums, q))


def _eval_batches(cfg: RunConfig, rows: int | None, eval_batch: int) -> int | None:
    """How many evaluation batches one evaluation takes (the largest packed one is among these), when known."""
    d = cfg.data
    if d.eval_samples:
        n = d.eval_samples
    elif d.validation_fraction and rows and not d.validation_file:
        n = max(1, int(rows * d.validation_fraction))
    else:
        return None
    return max(1, math.ceil(n / max(eval_batch, 1)))


def step_tokens(cfg: RunConfig, packing: bool) -> StepTokens:
    """Tokens in the largest training step (and evaluation step) this run will take."""
    t, max_length = cfg.train, cfg.data.max_length
    b, eb = t.batch_size, t.eval_batch_size or t.batch_size
    got = sample_lengths(cfg)
    if isinstance(got, str):
        return StepTokens(b * max_length, eb * max_length, max_length,
                          f"{got}: assumed {b} x max_length {max_length}", measured=False)
    sample, longest, rows, head_only = got
    source = f"{len(sample)} of the data's first {HEAD_ROWS:,} rows" if head_only else f"{len(sample)} rows of the data"
    if not sample:
        return StepTokens(b * max_length, eb * max_length, max_length, "no rows: assumed max_length", False)
    longest = min(max(longest, max(sample)), max_length)
    mean = sum(sample) / len(sample)
    if packing:
        steps = _planned_steps(cfg, rows)

        def packed(batch: int, n: int = steps, margin: int = PACK_MARGIN) -> int:
            return int(min(batch * longest, max(longest, _largest_sum(sample, batch, n, margin))))

        # evaluation: the largest of the evaluation's own batches, which are the same at every evaluation: counted
        # from the held-out rows themselves when known, else drawn (no margin for other runs' shuffles)
        held = eval_lengths(cfg)
        n_eval = _eval_batches(cfg, rows, eb)
        ev = eval_batch_tokens(held, eb, True) if held else packed(eb, n_eval, 1) if n_eval else packed(eb)
        return StepTokens(packed(b), ev, longest,
                          f"packed: {b} examples of mean {mean:.0f} tokens, the largest of {steps:,} steps about "
                          f"{packed(b):,} tokens (from {source})", True)
    padded = min(max_length, -(-longest // 8) * 8)
    seqs = sequences_per_example(cfg)
    if seqs > 1:  # preference pairs: both answers of every pair, padded to the longest
        return StepTokens(seqs * b * padded, seqs * eb * padded, longest,
                          f"pairs: {b} x 2 answers x {padded} tokens (the longest prompt + answer, from {source}), "
                          "and a reference pass without gradients" if cfg.method.objective != "orpo" else
                          f"pairs: {b} x 2 answers x {padded} tokens (the longest prompt + answer, from {source})",
                          True)
    held = eval_lengths(cfg)
    return StepTokens(b * padded, eval_batch_tokens(held, eb, False) if held else eb * padded, longest,
                      f"padded: {b} x {padded} tokens (the longest example, from {source})", True)
