"""The one "looks like a path" check, used by the Setup form, data loading and model resolution."""

from __future__ import annotations

import pytest

from loratui.core.paths import looks_like_path


@pytest.mark.parametrize("text", ["/data/x", "./train.jsonl", "../m", "~/models/llama", "$DATA/train.csv", ".\\x"])
def test_path_prefixes(text):
    assert looks_like_path(text) and looks_like_path(text, data_file=True)


@pytest.mark.parametrize("text", ["train.jsonl", "reviews.CSV", "dump.parquet", "notes.txt", "x.tsv.gz"])
def test_data_files_by_suffix(text):
    assert looks_like_path(text, data_file=True)
    assert not looks_like_path(text)  # a model name with a dot is a hub id


@pytest.mark.parametrize("text", ["Qwen/Qwen2.5-0.5B", "smollm2-135m-instruct", "sample:sentiment.csv", "imdb"])
def test_names_are_not_paths(text):
    assert not looks_like_path(text) and not looks_like_path(text, data_file=True)
