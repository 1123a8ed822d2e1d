"""The merge wizard's run: the ``loratui merge ... --jsonl`` process, its progress lines, cancel, and the result.

``MergeRunning`` is the layer under ``MergeScreen`` (loratui.ui.screens.merge), which owns the wizard's steps and
fields; this half starts the process from them and shows what it says.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.widgets import ProgressBar, Static
from textual.worker import get_current_worker

from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.screens.merge_parts import (MergeExited, MergeLine, dir_size, failure_text, merged_table,
                                            stream_jsonl)
from loratui.ui.widgets.log_tail import LogTail


class MergeRunning(LoratuiScreen):
    """Running the merge the wizard set up, and its result."""

    adapter: Path | None
    phase: str
    result: dict | None
    failure: dict | None
    log_lines: list[str]
    _proc: subprocess.Popen | None
    # and from the wizard (MergeScreen): output, _show(), and _start(), which calls _run

    @work(thread=True, exclusive=True, exit_on_error=False, group="merge", description="Merging adapter")
    def _run(self, cmd: list[str], output: Path) -> None:
        worker = get_current_worker()
        rc, tail = stream_jsonl(cmd, self.post_message, lambda: worker.is_cancelled,
                                lambda proc: setattr(self, "_proc", proc))
        size = dir_size(output) if rc == 0 and output.is_dir() else None
        self.post_message(MergeExited(rc, size, tail))

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def action_cancel_merge(self) -> None:
        if self.phase == "running":
            self.workers.cancel_group(self, "merge")
            self._kill()
            self.failure = {"message": "merge cancelled", "hint": "the output folder may hold a partial model"}

    @on(MergeLine)
    def _line(self, message: MergeLine) -> None:
        data = message.data
        if data is None:
            self.log_lines.append(message.text)
            self.query_one("#mg-run-log", LogTail).set_lines(self.log_lines)
            return
        kind = data.get("kind")
        if kind == "progress":
            step = str(data.get("step") or "")
            fraction = data.get("fraction")
            self.query_one("#mg-run-step", Static).update(Text(step + "…", style="bold"))
            if isinstance(fraction, (int, float)):
                self.query_one("#mg-progress", ProgressBar).update(progress=max(0.0, min(1.0, float(fraction))))
            self.log_lines.append(step)
            self.query_one("#mg-run-log", LogTail).set_lines(self.log_lines)
        elif kind == "done":
            self.result = data
        elif kind == "failed":
            self.failure = data

    @on(MergeExited)
    def _exited(self, message: MergeExited) -> None:
        self._proc = None
        result = self.query_one("#mg-result", Static)
        result.remove_class("-ok", "-error")
        # a merge whose check failed exits 1 after its 'done' line: the model is saved, the table flags it
        if self.result is not None and self.failure is None:
            self.phase = "done"
            result.update(merged_table(self.result, message.disk_size, self.output))
            result.add_class("-ok")
        else:
            self.phase = "failed"
            result.update(failure_text("merge", self.failure, message.returncode, message.tail))
            result.add_class("-error")
        self._show()
