"""Message classes shared by the UI (one module, as STYLE.md asks).

Thread workers send these with ``post_message`` (thread-safe, non-blocking). Payloads are plain data; nothing here
imports torch or the heavy core. UI-2 may append its own classes at the end of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual.message import Message

from loratui.ui.widgets.run_state import RunView


# -- Setup screen -------------------------------------------------------------------------------------------------


@dataclass
class FieldProblem:
    """Why the estimate could not be made, when one field is the reason (an unknown base model): shown once, under
    that field: a few words, the fix, and the details only when the few words are not a summary of them."""

    field: str
    summary: str
    hint: str | None = None
    detail: str | None = None


@dataclass
class EstimateResult:
    """What the setup side panel shows for one config; every part may fail on its own (error text instead)."""

    trainable: int | None = None
    total: int | None = None
    params_error: str | None = None
    rows: list[Any] = field(default_factory=list)
    """``MemoryRow``-like objects: label, weights, grads, optimizer, activations, overhead, total (bytes)."""
    memory_error: str | None = None
    gpus: list[Any] | None = None
    """``GpuInfo``-like objects (index, name, memory_total, memory_used, memory_free); None: query unavailable."""
    gpu_error: str | None = None
    layers: list[str] | None = None
    """The model's own linear layer names (None: unknown, e.g. the model could not be read)."""
    problem: FieldProblem | None = None
    """The parameters and the memory failed for one field's reason (their error lines say the same)."""


@dataclass
class EstimateReady(Message):
    """The side-panel computation for config number ``seq`` finished (stale ones are ignored)."""

    seq: int
    model_key: str
    result: EstimateResult


@dataclass
class LayersReady(Message):
    """The model's linear layers were listed; open the target-module picker with them."""

    model_key: str
    layers: list[str]


@dataclass
class PreviewReady(Message):
    """Data preview examples (``PreviewExample`` objects: segments [(text, trains)], n_tokens)."""

    examples: list[Any]


@dataclass
class RunLaunched(Message):
    """A run was created and its engine started; switch to the monitor."""

    run_path: Path
    pid: int | None = None


@dataclass
class LiveRunsFound(Message):
    """A launch found runs training under the same runs folder (``RunSummary`` objects): ask before starting."""

    config: Any
    live: list[Any]


@dataclass
class FieldRejected(Message):
    """The core rejected a field (preflight or create_run raised a LoratuiError with ``field``)."""

    field: str
    message: str


@dataclass
class ConfigChanged(Message, bubble=True):
    """The setup form holds a new valid config (``config`` is a RunConfig) or an invalid one (``config`` None)."""

    config: Any
    errors: int = 0


# -- Monitor (posted from its watcher thread) -------------------------------------------------------------------


@dataclass
class RunUpdated(Message):
    """A new picture of the watched run; a backlog collapses into the newest."""

    run_dir: Path
    generation: int
    view: RunView
    state: str
    """a :class:`RunState`: running | starting | finished | stopped | failed | crashed | ..."""
    pid: int | None = None

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunUpdated) and message.generation == self.generation


@dataclass
class LogUpdated(Message):
    """The engine log's newest lines."""

    run_dir: Path
    generation: int
    lines: list[str]

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LogUpdated) and message.generation == self.generation


@dataclass
class WatchEnded(Message):
    """The watcher saw the run end (terminal event, or the process vanished); it keeps following, slowly."""

    run_dir: Path
    generation: int
    state: str


@dataclass
class RunResumedElsewhere(Message):
    """The ended run is active again (resumed by this app, another one, or ``loratui train --resume``)."""

    run_dir: Path
    generation: int
