"""Heavy core calls (estimates, layer lists, preflight, data preview) run in one long-lived helper process.

Building meta models and wrapping them with peft is pure Python that holds the GIL for about a second; run in the
app's own process it made typing in the Setup form stutter. In a helper process the app's worker thread only waits
on a pipe, the app never imports torch at all, and the helper keeps its imports and caches between calls.
Light module: no torch, no textual.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

_lock = threading.Lock()
_executor: ProcessPoolExecutor | None = None
_closed = False  # set by shutdown(): the app is leaving, no helper may start again


class HelperClosed(RuntimeError):
    """The helper was shut down because the app is exiting."""


def _init_helper(parent: int) -> None:
    """In the helper: nothing it prints reaches the app's terminal, and it exits when the app is gone."""
    from loratui.core.parent_watch import exit_with_parent

    _quiet()
    exit_with_parent(parent)  # the app gone, however it went (SIGKILL and a lost terminal included)
    _thread_lock_for_progress_bars()


def _thread_lock_for_progress_bars() -> None:
    """tqdm (datasets' progress bars, even disabled) makes a multiprocessing lock on first use; the helper is ended
    with SIGTERM, so that lock is never released, and multiprocessing's resource tracker, shared with the app,
    printed '1 leaked semaphore objects' on the terminal after the app had left (QA walk). A thread lock does."""
    try:
        from tqdm import tqdm

        tqdm.set_lock(threading.RLock())
    except Exception:  # noqa: BLE001 - no tqdm, nothing to do
        pass


def _quiet() -> None:
    """The helper inherits the terminal as its stdout and stderr (fds 1 and 2): a library's progress bar
    ('dropping empty rows: 100%|...' from datasets) was drawn over the app's screen. Both go to /dev/null; what
    goes wrong comes back as the call's exception."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


def _run(target: str, args: tuple, kwargs: dict) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args, **kwargs)


def _submit(target: str, args: tuple, kwargs: dict):
    global _executor
    with _lock:
        if _closed:
            raise HelperClosed("the app is exiting")
        if _executor is not None:
            return _executor.submit(_run, target, args, kwargs)
        # multiprocessing's resource tracker (started with the executor) and the helper (started on the first
        # submit) inherit sys.stderr's fd; inside a Textual app sys.stderr is a capture object without a real
        # one ("bad value(s) in fds_to_keep"), so both start with stderr on /dev/null
        saved = sys.stderr
        with open(os.devnull, "w") as devnull:
            sys.stderr = devnull
            try:
                # spawn: the app has threads, and a forked child of a threaded process can deadlock
                _executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_helper, initargs=(os.getpid(),))
                return _executor.submit(_run, target, args, kwargs)
            finally:
                sys.stderr = saved


def call(target: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``module:function`` in the helper process and return its result (its exceptions re-raise here)."""
    global _executor
    try:
        return _submit(target, args, kwargs).result()
    except BrokenProcessPool:  # the helper died (killed, out of memory): start a fresh one once
        if _closed:
            raise HelperClosed("the app is exiting") from None
        with _lock:
            _executor = None
        return _submit(target, args, kwargs).result()


@atexit.register
def shutdown() -> None:
    """Stop the helper without waiting for a slow call (a hub lookup can take a minute); no new one starts after."""
    global _executor, _closed
    with _lock:
        ex, _executor = _executor, None
        _closed = True
    if ex is None:
        return
    for proc in list(getattr(ex, "_processes", {}).values()):
        proc.terminate()
    ex.shutdown(wait=False, cancel_futures=True)
