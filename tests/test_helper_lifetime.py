"""The app's helper processes end with the app, however it went: a walk found the playground's process running
on after its tmux session was killed (SIGHUP ignored, so the app left on noticing the lost terminal, and the
worker, busy loading a model while the hub lookup retried, read its closed stdin only after that)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

#: the playground's real process, its model load made endless (a hub lookup retrying with no network)
WORKER = """
import sys, time
from loratui.train import playground_worker as w
w.Playground.load = lambda self, *a, **k: time.sleep(120)
raise SystemExit(w.main())
"""

#: the app's side, as the Playground screen drives it: the real client starts the worker and asks for a model
APP = f"""
import sys, time
from loratui.core.playground import PlaygroundClient
client = PlaygroundClient(lambda event: None, command=[sys.executable, "-c", {WORKER!r}])
client.send("load", model="HuggingFaceTB/SmolLM2-135M-Instruct")
print(client.proc.pid, flush=True)
time.sleep(120)
"""


def ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_playground_process_ends_when_the_app_is_gone_mid_load():
    app = subprocess.Popen([sys.executable, "-c", APP], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(app.stdout.readline())
        time.sleep(3.0)  # the worker started and took the load in hand
        assert not ended(worker)
        app.kill()  # the app gone without closing its helper (as when it leaves a dead terminal)
        app.wait()
        deadline = time.monotonic() + 10
        while not ended(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ended(worker), "the playground process outlived the app"
    finally:
        app.kill()
        if worker is not None and not ended(worker):
            psutil.Process(worker).kill()
