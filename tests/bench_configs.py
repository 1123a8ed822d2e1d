"""bench/speed.py's configs for the estimate's tests (the ``bench_env`` fixture in conftest.py gives the data file
and the model folders)."""

from __future__ import annotations

from loratui.core.config import RunConfig


def bench_cfg(bench_env, shape, method, batch, steps, variant):
    from types import SimpleNamespace

    from speed import loratui_config

    work, model_dir = bench_env
    args = SimpleNamespace(method=method, steps=steps, batch=batch)
    return RunConfig.model_validate(loratui_config(args, model_dir(shape), work / "data.jsonl", work / "runs", "x",
                                                   variant))
