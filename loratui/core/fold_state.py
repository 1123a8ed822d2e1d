"""A run's state: its events' newest lifecycle event, status.json and whether its engine is alive, weighed as the
one fold (:mod:`loratui.core.fold`) does for every view.

Light module (pydantic only, through :mod:`loratui.core.protocol`).
"""

from __future__ import annotations

from loratui.core.protocol import TERMINAL_KINDS, RunState, RunStatus

#: how well a process's start time is known (psutil: boot time in whole seconds plus clock ticks)
START_TIME_SLACK = 1.0


def run_state(lifecycle: str | None, terminal_time: float | None, lifecycle_time: float | None,
              status: RunStatus | None = None, *, live_pid: int | None = None, live_since: float | None = None,
              broken: bool = False, stop_asked: bool = False) -> RunState:
    """The newest truth wins: a live engine process newer than the last final event, else the events' own
    final event, else status.json; a part that started and whose process is gone crashed. A status.json that
    can't be read (``broken``) makes the run unreadable: the listing says why instead of guessing. ``stop_asked``:
    the live engine was asked to stop (:func:`loratui.core.run_control.stop_run` recorded it): stopping."""
    if broken:
        return RunState.UNREADABLE  # status.json can't be trusted: say so (with the reason) rather than guess
    if live_pid is not None:
        ended = terminal_time
        # a process's start time is known to about a second (boot time in whole seconds): one started just after
        # the last final event (a quick resume) is newer; an engine lives far longer than that before it ends
        if ended is None or live_since is None or live_since + START_TIME_SLACK > ended:
            if stop_asked:
                return RunState.STOPPING
            return RunState.RUNNING if lifecycle in ("started", "resumed") else RunState.STARTING
    if lifecycle in TERMINAL_KINDS:
        return RunState(lifecycle)
    st = status.state if status is not None else None
    if lifecycle in ("started", "resumed"):
        said = (status.updated or status.ended) if status is not None else None
        if st in TERMINAL_KINDS and (lifecycle_time is None or (said or 0) >= lifecycle_time):
            return RunState(st)  # the engine's last word is in status.json (its event line is still partial)
        return RunState.CRASHED
    if st == "running":
        return RunState.CRASHED  # launched (or announced) and gone before a word
    if st in TERMINAL_KINDS:
        return RunState(st)
    return RunState.WAITING
