"""Runs that need you, told wherever you are: the terminal bell and a desktop notification when a run finishes,
fails, stalls or raises an alert, whichever screen is open.

The notification is written as OSC 9 (iTerm2, Windows Terminal, kitty, WezTerm, foot) and OSC 777 (rxvt-unicode,
VTE terminals such as GNOME Terminal): plain escape sequences, so they travel over SSH to the user's desktop (tmux
passes them on with ``set -g allow-passthrough on``). ``LORATUI_NOTIFY=off`` (or ``loratui --no-notify``) turns
them off. The watcher reads the run folders on a thread, one incremental reader a run, like the Runs screen.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from loratui.core.fmt import printable
from loratui.core.runs import RunDir, RunReader

#: states a run reaching them is told about
TOLD = frozenset({"finished", "failed", "stalled", "crashed"})


def enabled() -> bool:
    return os.environ.get("LORATUI_NOTIFY", "on").lower() not in ("off", "0", "no", "false")


def sequences(title: str, body: str) -> str:
    """OSC 9 and OSC 777 for one notification (control characters in the text are escaped first)."""
    title, body = printable(title, 80).replace(";", ","), printable(body, 200).replace(";", ",")
    return f"\x1b]9;{title}: {body}\x07\x1b]777;notify;{title};{body}\x07"


class RunWatch:
    """Remembers each run's state and alert count; ``poll`` returns (run, what happened) for the changes since the
    last poll. Runs already ended when the watch starts are not told about."""

    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir)
        self.readers: dict[Path, RunReader] = {}
        self.seen: dict[Path, tuple[str, int]] = {}
        self.first = True

    def poll(self) -> list[tuple[str, str]]:
        try:
            folders = [p for p in self.runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            return []
        news: list[tuple[str, str]] = []
        for folder in folders:
            run = RunDir(folder)
            if not run.exists():
                continue
            reader = self.readers.get(folder) or self.readers.setdefault(folder, RunReader(run))
            reader.poll()
            s = reader.summary(now=time.time())
            state, alerts = str(s.state), len(s.alerts)
            before = self.seen.get(folder)
            self.seen[folder] = (state, alerts)
            if self.first or before is None:
                continue
            if state != before[0] and state in TOLD:
                detail = {"finished": f"finished at step {s.step}", "failed": f"failed: {s.error or ''}",
                          "stalled": f"stalled at step {s.step}: no progress",
                          "crashed": "its engine is gone without a final event"}[state]
                news.append((s.name, detail))
            if alerts > before[1]:
                news.append((s.name, f"alert: {s.alerts[-1].get('message') or s.alerts[-1].get('alert')}"))
        self.first = False
        return news


def tell(write: Callable[[str], None], bell: Callable[[], None], news: list[tuple[str, str]]) -> None:
    """Ring once and send one notification per change through the app's own terminal output."""
    if not news:
        return
    for name, what in news:
        write(sequences(f"loratui {name}", what))
    bell()
