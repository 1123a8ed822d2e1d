"""A helper process that ends when the process that started it is gone, however it went (SIGKILL, a lost terminal
while SIGHUP is ignored, an exit that never got to close its helpers).

Light module: standard library only.
"""

from __future__ import annotations

import os
import threading
import time


def exit_with_parent(parent: int | None = None, interval: float = 1.0) -> threading.Thread:
    """Watch, in a daemon thread, that ``parent`` (by default the current parent) is still this process's parent;
    when it is not (it died and the process was re-parented), exit at once, whatever the main thread is doing (a
    model loading, a hub lookup retrying: a closed stdin is noticed only after them)."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    thread = threading.Thread(target=watch, name="loratui-parent-watch", daemon=True)
    thread.start()
    return thread
