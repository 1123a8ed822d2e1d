"""Deleting a run: its whole folder (config, events, logs, adapter, checkpoints, merged model, exports) goes, or
nothing does. A run whose engine is alive, or that waits in the queue, is refused with the way to free it; the run's
lock is held while the folder goes, so no engine starts in it meanwhile.

Light module (no torch, no Textual).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from loratui.core.adapters import folder_files
from loratui.core.errors import LoratuiError, RunError
from loratui.core.identity import RunLock
from loratui.core.queue import RunQueue
from loratui.core.runs import RunDir, summarize


def folder_size(path: Path) -> tuple[int, int]:
    """(files, bytes) under ``path``, links not followed."""
    files = folder_files(path)
    return len(files), sum(size for _, size in files)


def delete_run(path: str | Path) -> None:
    """Remove the run folder ``path`` whole; one line (naming the way out) when it cannot go."""
    run = RunDir(Path(path))
    if run.path.is_symlink():
        raise LoratuiError(f"{run.path} is a symbolic link", hint="delete the folder it points to instead")
    if not run.path.is_dir() or not run.exists():
        raise LoratuiError(f"{run.path} is not a run folder (no config.yaml, no events); nothing was deleted")
    state = summarize(run).state
    if state.active:
        raise RunError(f"{run.name} is {state}; nothing was deleted", field="run",
                       hint="stop it first (Runs: x, or loratui stop), then delete it")
    waiting = [e for e in RunQueue(run.path.parent).read().waiting if e.run == run.name]
    if waiting:
        raise RunError(f"{run.name} waits in the queue; nothing was deleted", field="run",
                       hint="cancel it in the Queue (w, then x): that removes its folder too")
    lock = RunLock.acquire(run.path)  # an engine starting in it now (a resume elsewhere): RunBusy, one line
    try:
        shutil.rmtree(run.path)
    finally:
        lock.release()
    RunQueue(run.path.parent).forget_run(run.name)
