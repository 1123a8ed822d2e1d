"""Calls the app runs in its helper process (``loratui.ui.offload``) whose results must unpickle without torch."""

from __future__ import annotations


def preview(cfg, n: int = 3) -> list:
    """Data preview examples (runs in the helper process), as plain namespaces so that unpickling them in the app
    does not import loratui.train.data (and with it datasets and torch)."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from loratui.train.data import preview as _preview
    from loratui.train.models import load_tokenizer

    return [SimpleNamespace(**asdict(ex)) for ex in _preview(cfg, load_tokenizer(cfg), n)]


def preflight(cfg) -> None:
    """Preflight checks in the helper process; only errors come back (the result holds transformers objects)."""
    from loratui.train.preflight import check

    check(cfg)
