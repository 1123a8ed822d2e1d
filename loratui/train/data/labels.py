"""Classification labels: class names and integer ids through datasets' ``ClassLabel``, checked against
``model.num_labels``.

String labels become a ``ClassLabel`` with datasets' own ``class_encode_column`` (sorted unique names, ids in that
order); the validation split is cast to the training split's feature, so a name the training data lacks is an
error there, not a silent new id. Integer labels stay integers, checked to lie in 0..num_labels-1.
"""

from __future__ import annotations

import datasets
from datasets import Dataset

from loratui.core.config import RunConfig
from loratui.core.errors import DataError
from loratui.train.data.sources import _fp


def _is_class_label(ds: Dataset, col: str) -> bool:
    return isinstance(ds.features.get(col), datasets.ClassLabel)


def _string_labels(cfg: RunConfig, ds: Dataset) -> bool:
    col = cfg.data.label_column
    return not _is_class_label(ds, col) and any(isinstance(v, str) for v in ds[col])


def _check_ints(values: list, where: str, n: int | None) -> None:
    """Whole numbers only (a float like 1.0 counts), and with ``n`` within 0..n-1."""
    for v in values:
        if isinstance(v, bool) or not (isinstance(v, int) or (isinstance(v, float) and float(v).is_integer())):
            raise DataError(f"label {v!r} in {where} is neither a class name nor a whole number",
                            field="data.label_column",
                            hint="labels must be strings (class names) or integers 0..num_labels-1")
    bad = [int(v) for v in values if n is not None and not 0 <= int(v) < n]
    if bad:
        worst = max(bad, key=abs)
        raise DataError(f"label {worst} in {where} is outside 0..{n - 1}", field="model.num_labels",
                        hint=f"set model.num_labels to {max(max(int(v) for v in values) + 1, n)}" if worst >= 0
                        else "labels must be 0..num_labels-1 (drop unlabeled rows)")


def _stripped(ds: Dataset, col: str) -> Dataset:
    return ds.map(lambda b: {col: [v.strip() if isinstance(v, str) else v for v in b[col]]}, batched=True,
                  new_fingerprint=_fp(ds, "strip-labels", col))


def encode_labels(cfg: RunConfig, train: Dataset, val: Dataset | None = None
                  ) -> tuple[Dataset, Dataset | None, list[str]]:
    """Train and validation with integer class ids in the label column, and the class names in id order."""
    col, n = cfg.data.label_column, cfg.model.num_labels
    if _string_labels(cfg, train):
        if any(not isinstance(v, str) for v in train[col]):
            bad = next(v for v in train[col] if not isinstance(v, str))
            raise DataError(f"label {bad!r} in the training data is not a class name like the others",
                            field="data.label_column", hint="give every row a class name (or every row an integer)")
        train = _stripped(train, col).class_encode_column(col)
    if _is_class_label(train, col):
        names = list(train.features[col].names)
        if len(names) > n:
            raise DataError(f"the data has {len(names)} labels ({', '.join(names[:8])}"
                            f"{', ...' if len(names) > 8 else ''}) but model.num_labels is {n}",
                            field="model.num_labels", hint=f"set model.num_labels: {len(names)}")
        if val is not None and not (_is_class_label(val, col) and list(val.features[col].names) == names):
            val = _cast_like_train(val if not _string_labels(cfg, val) else _stripped(val, col), train, col, names)
        return train, val, names
    _check_ints(list(train[col]), "the training data", n)
    if val is not None:
        if _string_labels(cfg, val):
            raise DataError("the validation data has class names but the training data has integer labels",
                            field="data.label_column", hint="use the same kind of label in every split")
        _check_ints(list(val[col]), "the validation data", n)
    as_ids = datasets.Value("int64")  # 1.0 or True read from a file are class ids, not regression targets
    train = train.cast_column(col, as_ids)
    val = val.cast_column(col, as_ids) if val is not None else None
    return train, val, [str(i) for i in range(n)]


def _cast_like_train(val: Dataset, train: Dataset, col: str, names: list[str]) -> Dataset:
    feature = train.features[col]
    try:
        return val.cast_column(col, feature)
    except (ValueError, TypeError, KeyError) as err:
        known = set(names)
        unknown = next((v for v in val[col] if isinstance(v, str) and v not in known), None)
        what = repr(unknown) if unknown is not None else str(err).splitlines()[0][:120]
        raise DataError(f"label {what} in the validation data is not one of the training labels "
                        f"({', '.join(names)})", field="data.label_column",
                        hint="use the same label names in every split") from None


def label_names(cfg: RunConfig, train: Dataset) -> list[str]:
    """Class names in id order: a ClassLabel's names, the sorted unique strings, or "0".."num_labels-1" for ints."""
    col = cfg.data.label_column
    values = [v for v in train[col] if v is not None]
    seen = {v.strip() if isinstance(v, str) else v for v in values}
    if len(seen) < 2:
        only = f"only {next(iter(seen))!r}" if seen else "no labels"
        raise DataError(f"the training data's '{col}' column holds {only}: a classifier needs examples of at least "
                        "two labels to learn anything", field="data.label_column",
                        hint="add examples of the other labels, or point data.label_column at the right column")
    if _is_class_label(train, col):
        return list(train.features[col].names)
    if values and all(isinstance(v, str) for v in values):
        return sorted(seen)
    _check_ints(values, "the training data", None)
    return [str(i) for i in range(cfg.model.num_labels)]
