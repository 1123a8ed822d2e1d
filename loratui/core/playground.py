"""The app's side of the playground: a generation process spoken to in JSON lines (no torch here).

The process (``python -m loratui.train.playground_worker``) loads the model once and keeps it; the app sends
commands and a reader thread hands every event to ``on_event`` as it arrives (tokens stream one by one).
Light module: subprocess and json only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

WORKER_MODULE = "loratui.train.playground_worker"


def worker_command() -> list[str]:
    return [sys.executable, "-m", WORKER_MODULE]


class PlaygroundClient:
    """One generation process. ``on_event`` is called from the reader thread (post a message from it)."""

    def __init__(self, on_event: Callable[[dict], None], command: list[str] | None = None,
                 log_path: str | Path | None = None):
        self.on_event = on_event
        self.command = command or worker_command()
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._next_id = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            err = open(self.log_path, "ab")
        else:
            err = open(os.devnull, "wb")
        try:
            self.proc = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, close_fds=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
        finally:
            err.close()
        threading.Thread(target=self._read, args=(self.proc,), daemon=True, name="playground-reader").start()

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                self.on_event(event)
        code = proc.wait()
        self.on_event({"kind": "exited", "code": code})

    def send(self, cmd: str, **data: Any) -> int:
        """Send a command (starting the process if needed); returns the request id."""
        self.start()
        with self._lock:
            self._next_id += 1
            req_id = self._next_id
            line = json.dumps({"cmd": cmd, "id": req_id, **data}) + "\n"
            assert self.proc is not None and self.proc.stdin is not None
            try:
                self.proc.stdin.write(line.encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self.on_event({"kind": "error", "id": req_id, "message": "the generation process is gone",
                               "hint": "press ctrl+o to load the model again"})
        return req_id

    def stop_generation(self) -> None:
        if self.running:
            self.send("stop")

    def close(self, timeout: float = 3.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.write(b'{"cmd": "stop"}\n{"cmd": "quit"}\n')
            proc.stdin.flush()
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
