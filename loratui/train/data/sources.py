"""Where a run's rows come from: files, folders, shipped samples, hub datasets; columns checked, empty rows dropped, the validation split made."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import datasets
from datasets import Dataset

from loratui.core.config import RunConfig
from loratui.core.errors import DataError
from loratui.core.paths import looks_like_path
from loratui.train.resolve import hub_unreachable



SAMPLES_DIR = Path(__file__).resolve().parents[2] / "samples"
#: file extension -> datasets builder
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
#: columns each format needs: (config key, required)
FORMAT_COLUMNS: dict[str, list[tuple[str, bool]]] = {
    "text": [("text_column", True)],
    "alpaca": [("instruction_column", True), ("input_column", False), ("output_column", True)],
    "chat": [("messages_column", True)],
    "classification": [("text_column", True), ("label_column", True)],
    # the answers' columns depend on the shape (pairs or unpaired rows): data.preference checks them
    "preference": [("prompt_column", True)],
}

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
    no_rows = DataError(f"no rows in {path.name}", field=field,
                        hint="the file holds no records (only blank lines, or a CSV header alone)")
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # noqa: BLE001 - any parser failure is a user-facing data problem
        if "corresponds to no data" in str(err):
            raise no_rows from None
        kind = {"json": "JSON / JSON lines", "csv": "CSV", "parquet": "Parquet"}[builder]
        raise DataError(f"cannot read {path.name} as {kind}: {_first_cause(err)}", field=field,
                        hint="fix or re-export the file") from None
    if len(ds) == 0:
        raise no_rows
    return ds


def _load_named(name: str, subset: str | None, split: str, field: str, split_field: str) -> Dataset:
    """A hub dataset or a local folder, through ``datasets.load_dataset(name, subset, split=...)``.

    ``field`` is the config key blamed when the dataset cannot be loaded, ``split_field`` when the split is unknown.
    """
    unreachable = None if Path(name).is_dir() else hub_unreachable()
    try:
        with offline(unreachable is not None):  # the hub out of reach: its cache only, at once
            ds = datasets.load_dataset(name, subset, split=split)
    except Exception as err:  # noqa: BLE001
        if unreachable is None or (isinstance(err, ValueError) and "split" in _first_cause(err).lower()):
            raise _load_error(err, name, split, field, split_field) from None
        raise DataError(f"'{_short(name)}' is not a local file or folder, and the hub can't be reached "
                        f"({unreachable}) nor holds it in this machine's cache", field=field,
                        hint="give a local file (.jsonl, .json, .csv, .parquet) or folder, or connect and "
                             "retry") from None
    if isinstance(ds, datasets.DatasetDict):  # should not happen with split=..., but be safe
        ds = ds[split]
    return ds


@contextlib.contextmanager
def offline(on: bool):
    """datasets and the hub client offline for a block (``on``): a hub dataset comes from the local cache or fails
    at once (they retried for about 80 s on a machine without a network before saying so)."""
    import huggingface_hub.constants as hub

    if not on:
        yield
        return
    was = (datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = was


def _load_error(err: Exception, name: str, split: str, field: str, split_field: str) -> DataError:
    if isinstance(err, ValueError):
        msg = _first_cause(err)
        if "split" in msg.lower():
            return DataError(f"no split '{split}' in {_short(name)}: {msg}", field=split_field,
                             hint="set it to one of the dataset's splits")
        return DataError(f"cannot load dataset '{_short(name)}': {msg}", field=field)
    return DataError(f"cannot load dataset '{_short(name)}': {_first_cause(err)}", field=field,
                     hint="check the name (org/name), the path, or that this machine can reach the hub")


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
    if cfg.data.format == "preference" and len(ds):  # a bad row is named (its row in the file), never dropped
        from loratui.train.data.preference import check_rows

        check_rows(cfg, ds, where)
        return ds
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
                     d.label_column, d.prompt_column, d.chosen_column, d.rejected_column, d.completion_column])


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
        try:
            check_columns(cfg, val, where)
        except DataError as err:  # data.source has these columns (it was checked first): the files differ
            raise DataError(f"{where} is not in data.source's format: {err.message}", field="data.validation_file",
                            hint="give a validation file with the same columns as data.source, or remove it "
                                 "(data.validation_fraction holds rows out instead)") from None
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


#: changes whenever this package's code does, so datasets' cache never serves rows made by older code
_SOURCE_HASH = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))).hexdigest()[:16]


def _tokenizer_key(tokenizer) -> str:
    parts = [getattr(tokenizer, "name_or_path", ""), type(tokenizer).__name__, str(len(tokenizer)),
             str(getattr(tokenizer, "chat_template", "")), str(tokenizer.eos_token), str(tokenizer.bos_token),
             str(tokenizer.pad_token), str(tokenizer.sep_token)]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _fp(ds: Dataset, *parts: Any) -> str:
    """A deterministic fingerprint for a transform of ``ds`` (so datasets' cache works without hashing closures)."""
    payload = json.dumps([ds._fingerprint, _SOURCE_HASH, *[str(p) for p in parts]])
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
