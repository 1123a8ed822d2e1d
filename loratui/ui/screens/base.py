"""What every loratui screen shares: failed workers reach the user, and typing never runs a screen's letter keys.

``Worker.StateChanged`` is posted to the node that started the worker and does not bubble, so an app-level handler
only sees workers started on the app. Each screen therefore handles its own workers' state here:

- an action the user started (resume, delete, merge, preview, launch...) that fails shows the error modal;
- a poller (a group listed in ``POLLERS``: the monitor's watcher, the GPU sampler, the runs list) that fails shows a
  toast and is started again after a back-off (1, 2, 4 ... 30 s), as dolphie retries its polling worker; the count
  starts over once a poller has run for a minute without failing.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from typing import ClassVar

from textual import on
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from loratui.core.errors import LoratuiError

log = logging.getLogger("loratui.ui")

#: seconds before a failed poller starts again: 1, 2, 4 ... at most this
MAX_BACKOFF = 30.0
#: a poller that ran this long without failing starts its back-off from 1 s again
RESET_AFTER = 60.0


def worker_title(worker: Worker) -> str:
    what = worker.description or worker.name or "background work"
    return f"{what[:1].upper()}{what[1:]}"


def one_line(error: BaseException) -> str:
    if isinstance(error, LoratuiError):
        return str(error)
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class LoratuiScreen(Screen):
    """Base of the app's screens (see the module docstring)."""

    #: worker group -> name of the method that starts the poller again (no arguments)
    POLLERS: ClassVar[dict[str, str]] = {}
    #: letter keys of the app (screen switching, quit) do nothing while this screen says the user is typing
    TEXT_ENTRY: ClassVar[bool] = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._failures: dict[str, tuple[int, float]] = {}  # group -> (failures in a row, time of the last)

    @property
    def active_bindings(self) -> dict:
        """Textual's, with the app's screen-switching keys (Setup, Monitor, Runs, ...) left out of the footer from
        the last while the footer would be wider than the screen: at 80 columns a key is dropped whole, never cut
        mid-word ('t Try  v Comp'); the keys still work, and Help lists them all."""
        got = super().active_bindings

        def cells(binding) -> int:  # 'key description' and the space before the next key
            return len(self.app.get_key_display(binding)) + len(binding.description) + 2

        try:
            width = self.app.size.width
            shown, actions = [], set()
            for k, ab in got.items():  # the footer shows one key per action (f5 of 'f5,ctrl+r')
                if ab.binding.show and ab.binding.action not in actions:
                    actions.add(ab.binding.action)
                    shown.append((k, ab))
            used = sum(cells(ab.binding) for _, ab in shown) - 1  # no space after the last
        except Exception:  # noqa: BLE001 - no app or size yet: Textual's own
            return got
        out = dict(got)
        for key, ab in reversed(shown):
            if used <= width:
                break
            if ab.node is self.app and ab.binding.action.startswith("go("):
                out[key] = ab._replace(binding=dataclasses.replace(ab.binding, show=False))
                used -= cells(ab.binding)
        return out

    def on_resize(self) -> None:
        self.refresh_bindings()  # the footer's keys follow the width

    def typing(self) -> bool:
        """Whether the user's focus is in a text-entry place (a form field, a wizard step)."""
        return self.TEXT_ENTRY and self.focused is not None

    @on(Worker.StateChanged)
    def _worker_state_changed(self, event: Worker.StateChanged) -> None:
        event.stop()
        worker = event.worker
        if event.state != WorkerState.ERROR or worker.error is None:
            return
        error = worker.error
        if not isinstance(error, LoratuiError):
            log.error("%s failed:\n%s", worker_title(worker), "".join(traceback.format_exception(error)))
        self.worker_failed(worker, error)

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        """A worker started on this screen raised ``error``: a toast and a retry for pollers, else the modal.
        Screens extend this to put themselves back in order (e.g. the merge wizard leaves its 'running' phase)."""
        restart = self.POLLERS.get(worker.group)
        if restart is None:
            self.app.show_error(error, title=f"{worker_title(worker)} failed")
            return
        count, last = self._failures.get(worker.group, (0, 0.0))
        now = time.monotonic()
        if now - last > RESET_AFTER:
            count = 0
        delay = min(MAX_BACKOFF, 2.0 ** count)
        self._failures[worker.group] = (count + 1, now)
        self.notify(f"{one_line(error)}\nretrying in {delay:g} s", title=f"{worker_title(worker)} failed",
                    severity="warning", timeout=min(10.0, delay + 3))
        self.set_timer(delay, getattr(self, restart), name=f"retry-{worker.group}")
