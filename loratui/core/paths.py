"""The one answer to "did the user mean a local path?" (config fields, model names, data sources).

A string that starts like a path is one; a data source is also one when it ends in a data file's suffix. Anything
else (an alias, ``org/name``, ``sample:NAME``) is looked up elsewhere. Light module: no torch, no Textual.
"""

from __future__ import annotations

from pathlib import Path

#: how a path the user typed starts (absolute, relative, home, a variable, a Windows-style relative path)
PATH_PREFIXES = ("/", "./", "../", "~", "$", ".\\")
#: suffixes of data files a source may name without a leading ./
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".txt", ".tsv", ".xlsx", ".xls", ".gz", ".zip", ".arrow")


def looks_like_path(text: str, *, data_file: bool = False) -> bool:
    """Whether ``text`` names a local file or folder (so a missing one is 'no such file', not a hub lookup).

    ``data_file``: also when its last suffix is a data file's (``train.jsonl``); model names leave it off, since
    hub ids contain dots (``Qwen2.5-0.5B``)."""
    text = text.strip()
    if text.startswith("sample:"):  # a file shipped with loratui, named by the sample scheme
        return False
    if text.startswith(PATH_PREFIXES):
        return True
    return data_file and Path(text).suffix.lower() in DATA_SUFFIXES
