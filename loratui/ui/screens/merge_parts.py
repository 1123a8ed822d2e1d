"""What the merge wizard and the GGUF export screen share: the commands they start, default folders, the thread
reader that turns a ``--jsonl`` process's lines into messages, and the result table. Light: no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from rich.table import Table
from rich.text import Text
from textual.message import Message
from textual.widgets import RadioButton

from loratui.core.fmt import format_bytes
from loratui.core.merge_check import failed_advice, headline


def merge_command(adapter: Path, output: Path, base: str | None, dtype: str) -> list[str]:
    """The merge subprocess command (tests replace it with a fake script)."""
    cmd = [sys.executable, "-m", "loratui", "merge", str(adapter), str(output)]
    if base:
        cmd += ["--base", base]
    return cmd + ["--dtype", dtype, "--jsonl"]


def default_output(adapter: Path) -> Path:
    """runs/<run>/adapter -> runs/<run>/merged; a checkpoint runs/<run>/checkpoints/checkpoint-N ->
    runs/<run>/merged-checkpoint-N; anything else -> <folder>-merged beside it."""
    adapter = Path(adapter)
    if adapter.name == "adapter":
        return adapter.parent / "merged"
    return beside_checkpoints(adapter, "merged")


def beside_checkpoints(folder: Path, what: str) -> Path:
    """<folder>-WHAT beside ``folder``, but a run's checkpoint's outside its checkpoints/: the trainer counts every
    'checkpoint-N*' folder there as a checkpoint (its rotation would delete 'checkpoint-100-merged')."""
    if folder.parent.name == "checkpoints" and folder.name.startswith("checkpoint-"):
        return folder.parent.parent / f"{what}-{folder.name}"
    return folder.parent / f"{folder.name}-{what}"


def in_runs(runs_dir: str | Path, tail: str) -> str:
    """'RUNS/<run>/TAIL' in the runs folder the app was opened with (--runs-dir): what a path field suggests."""
    return str(Path(runs_dir) / "<run>" / tail)


def dir_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for fn in files:
            try:
                total += os.lstat(os.path.join(root, fn)).st_size
            except OSError:
                pass
    return total


class DtypeChoice(RadioButton):
    """A radio button whose dot shows only when chosen (the default draws a dim dot either way, which reads as
    chosen in a 256-colour terminal)."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "●" if self.value else " "


@dataclass
class MergeLine(Message):
    """One JSON object printed by the merge process (``kind``: progress | done | failed), or a plain text line."""

    data: dict | None
    text: str = ""


@dataclass
class MergeExited(Message):
    returncode: int
    disk_size: int | None = None
    tail: list[str] = field(default_factory=list)


def stream_jsonl(cmd: list[str], post: Callable[[Message], None], cancelled: Callable[[], bool],
                 started: Callable[[subprocess.Popen], None], what: str = "the merge") -> tuple[int, list[str]]:
    """Run ``cmd`` and post each of its JSON lines as a ``MergeLine`` (other lines too, as text) until it ends or
    ``cancelled()``; returns (exit code, its last 20 plain lines). Runs in a thread worker."""
    tail: list[str] = []
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    except OSError as err:
        post(MergeLine({"kind": "failed", "message": f"could not start {what}: {err}",
                        "hint": "check that loratui is installed in this Python environment"}))
        return 127, tail
    started(proc)
    assert proc.stdout is not None
    for line in proc.stdout:
        if cancelled():
            break
        line = line.rstrip("\n")
        data = None
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                data = None
        if isinstance(data, dict) and "kind" in data:
            post(MergeLine(data))
        elif line.strip():
            tail = (tail + [line])[-20:]
            post(MergeLine(None, line))
    if cancelled() and proc.poll() is None:
        proc.terminate()
    return proc.wait(), tail


def merged_table(r: dict, disk_size: int | None, output: Path) -> Table:
    """The merge's result: where, how big, what the check found, how long."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    check = r.get("check") or {}
    failed = check.get("ok") is False
    grid.add_row(Text(headline(check), style="bold yellow" if failed else "bold green"), "")
    if failed:
        grid.add_row("", Text("→ " + failed_advice(str(r.get("output") or output), str(r.get("dtype") or "")),
                              style="bold"))
    grid.add_row("output", str(r.get("output") or output))
    grid.add_row("size on disk", format_bytes(disk_size if disk_size is not None else r.get("size_bytes")))
    if check.get("summary"):
        grid.add_row("check", Text(check["summary"], style="" if check.get("ok") else "bold yellow"))
    max_diff = r.get("max_diff")
    grid.add_row("max difference", "-" if max_diff is None else
                 f"{max_diff:.3g} in the probe's logits (merged vs base + adapter)")
    seconds, wall = r.get("seconds"), r.get("wall_seconds")
    if wall is not None:  # the helper process's whole life: what the user waited
        grid.add_row("time", f"{wall:.1f} s" + (f" ({seconds:.1f} s merging, the rest loading libraries)"
                                                 if seconds is not None else ""))
    else:
        grid.add_row("time", "-" if seconds is None else f"{seconds:.1f} s")
    return grid


def failure_text(what: str, failure: dict | None, returncode: int, tail: list[str]) -> Text:
    """'✖ merge failed  field: message' and the hint; a process that died without saying why: its last lines."""
    f = failure or {}
    msg = f.get("message") or (tail[-1] if tail else "")
    if not f:
        msg = f"the {what} process exited with code {returncode}" + (f": {msg}" if msg else "")
    msg = " ".join(str(msg).split())
    if f.get("hint") and msg.endswith(f"({f['hint']})"):  # str(LoratuiError) carries the hint already
        msg = msg[: -len(f"({f['hint']})")].rstrip()
    text = Text.assemble((f"✖ {what} failed", "bold red"), "  ", msg)
    hint = f.get("hint") or (f"its last output is below; `loratui {what} ...` in a shell shows all" if not f else None)
    if hint:
        text.append("\n→ " + str(hint), style="bold")
    if not f and tail:
        text.append("\n" + "\n".join(tail[-4:]), style="dim")
    return text
