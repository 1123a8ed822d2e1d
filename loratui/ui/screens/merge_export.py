"""Export to GGUF (llama.cpp, Ollama): source, types, output folder, then ``loratui export ... --jsonl`` in a process
of its own; the result is the export's own report (sizes, llama.cpp's answers against the merged model, speed).

Opened from the merge wizard (ctrl+e: the adapter of the wizard, merged in memory; after a merge: the merged
model) and from Adapters (e). A non-empty output folder is replaced only after a confirm (``--force``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, ContentSwitcher, Footer, Input, Label, ProgressBar, Static
from textual.worker import Worker, get_current_worker

from loratui.core.export import (GENERAL_PROMPTS, GGUF_TYPES, RUN_MODEL_FOLDERS, prompts_note, read_report,
                                 report_rows)
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.screens.merge_parts import (MergeExited, MergeLine, beside_checkpoints, failure_text, in_runs,
                                            stream_jsonl)
from loratui.ui.widgets.form import FormInput
from loratui.ui.widgets.log_tail import LogTail
from loratui.ui.widgets.modals import ConfirmModal

#: what is ticked at first; the screen offers every type ``loratui export`` takes (core.export.GGUF_TYPES)
DEFAULT_TYPES = ("q8_0", "q4_k_m")


class TypeChoice(Checkbox):
    """A checkbox whose X shows only when ticked (the default draws a dim X either way, which reads as ticked in a
    256-colour terminal or a screen reader's text)."""

    @property
    def BUTTON_INNER(self) -> str:  # type: ignore[override]
        return "X" if self.value else " "


def export_command(source: Path, output: Path, types: list[str], force: bool) -> list[str]:
    """The export subprocess command (tests replace it with a fake script)."""
    cmd = [sys.executable, "-m", "loratui", "export", str(source), str(output), "--gguf", ",".join(types)]
    return cmd + (["--force"] if force else []) + ["--jsonl"]


def default_export_output(source: Path) -> Path:
    """runs/<run>/adapter or runs/<run>/merged -> runs/<run>/gguf; a checkpoint -> runs/<run>/gguf-checkpoint-N;
    anything else -> <folder>-gguf beside it."""
    source = Path(source)
    if source.name in RUN_MODEL_FOLDERS:
        return source.parent / "gguf"
    return beside_checkpoints(source, "gguf")


def source_problem(raw: str) -> str | None:
    if not raw:
        return "Give an adapter folder or a merged model folder."
    path = Path(raw).expanduser()
    if not ((path / "adapter_config.json").is_file() or (path / "config.json").is_file()):
        return f"{path} holds neither an adapter (adapter_config.json) nor a model (config.json)."
    return None


def report_table(report: dict) -> Table:
    """The export's table as ``loratui export`` prints it (core.export.report_rows): the merged model's own row,
    then one a file: size, greedy answers as the merged model's, top-1 agreement, tokens/s, exact answers, verdict."""
    rows = report_rows(report)
    exact = any(r["exact"] != "-" for r in rows)  # prompts with expected answers (a run's held-out set) only
    t = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    for col, justify in (("type", "left"), ("size", "right"), ("same", "right"), ("top-1", "right"),
                         ("tok/s", "right"), ("exact", "right"), ("", "left")):
        if col != "exact" or exact:
            t.add_column(col, justify=justify, no_wrap=col != "", overflow="fold")
    for r in rows:
        verdict = r["verdict"]
        style = "dim" if r["type"] == "merged" else "green" if verdict.startswith("✔") else "yellow"
        cells = [r["type"], r["size"], r["same"], r["top1"], r["tps"]] + ([r["exact"]] if exact else [])
        t.add_row(*cells, Text(verdict, style=style))
    return t


class ExportScreen(LoratuiScreen):
    """GGUF export of ``source`` (an adapter or a merged model folder)."""

    TEXT_ENTRY = True

    DEFAULT_CSS = """
    ExportScreen #ex-title { height: 1; padding: 0 1; background: $boost; }
    ExportScreen ContentSwitcher { height: 1fr; padding: 0 1; }
    ExportScreen .row { height: auto; }
    ExportScreen .lbl { width: 8; padding-top: 1; text-style: bold; }
    ExportScreen #ex-source, ExportScreen #ex-output { width: 1fr; }
    ExportScreen #ex-types { height: 3; }
    ExportScreen #ex-types Checkbox { width: auto; border: none; padding: 0; margin: 1 0 0 0; }
    ExportScreen .note { color: $text-muted; padding-left: 8; height: auto; }
    ExportScreen #ex-problem { color: $error; padding-left: 8; height: auto; }
    ExportScreen #ex-buttons { height: 3; padding: 0 1; align-horizontal: right; }
    ExportScreen #ex-buttons Button { margin-left: 1; }
    ExportScreen #ex-progress { margin: 1 0; }
    ExportScreen #ex-log { height: 1fr; color: $text-muted; }
    ExportScreen #ex-result.-error { border: heavy $error; background: $error 15%; padding: 0 1; }
    ExportScreen #ex-result.-ok { border-left: thick $success; background: $success 10%; padding: 0 1; }
    """

    BINDINGS = [
        Binding("ctrl+n", "export", "Export"),
        Binding("escape", "close", "Back"),
        Binding("ctrl+x", "cancel_export", "Cancel export"),
    ]

    def __init__(self, source: Path | None = None, *, name: str | None = None, id: str | None = None):
        super().__init__(name=name, id=id)
        self.source = Path(source) if source else None
        self.phase = "form"  # form | running | done | failed
        self.result: dict | None = None
        self.failure: dict | None = None
        self.log_lines: list[str] = []
        self._proc: subprocess.Popen | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Export to GGUF for llama.cpp and Ollama, checked by llama.cpp", style="bold"),
                     id="ex-title")
        with ContentSwitcher(initial="ex-form"):
            with Vertical(id="ex-form"):
                with Horizontal(classes="row"):
                    yield Label("From", classes="lbl")
                    yield FormInput(str(self.source or ""), id="ex-source")  # placeholder: the app's runs folder
                yield Static(id="ex-source-note", classes="note")
                with Horizontal(id="ex-types", classes="row"):
                    yield Label("Types", classes="lbl")
                    for kind in GGUF_TYPES:
                        yield TypeChoice(kind, kind in DEFAULT_TYPES, id=f"ex-t-{kind}",
                                       tooltip=GGUF_TYPES[kind].about)
                with Horizontal(classes="row"):
                    yield Label("To", classes="lbl")
                    yield FormInput(id="ex-output")
                yield Static(id="ex-problem")
                yield Static(prompts_note(None), id="ex-prompts", classes="note")
            with Vertical(id="ex-run"):
                yield Static(id="ex-step")
                yield ProgressBar(total=1.0, show_eta=False, id="ex-progress")
                yield LogTail(id="ex-log")
            with Vertical(id="ex-done"):
                yield Static(id="ex-result")
        with Horizontal(id="ex-buttons"):
            yield Button("Back", id="ex-back")
            yield Button("Export", id="ex-go", variant="primary")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        runs = self.app.runs_dir
        self.query_one("#ex-source", Input).placeholder = in_runs(runs, "adapter") + " or a merged folder"
        self.query_one("#ex-output", Input).placeholder = in_runs(runs, "gguf")
        if self.source is not None:
            self.query_one("#ex-output", Input).value = str(default_export_output(self.source))
        self._show()
        self.query_one("#ex-source" if self.source is None else "#ex-go").focus()

    def on_unmount(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()  # the export cleans up its temporary folder on SIGTERM

    def typing(self) -> bool:
        return self.phase == "form"

    # -- form ----------------------------------------------------------------------------------------------------

    @property
    def types(self) -> list[str]:
        return [k for k in GGUF_TYPES if self.query_one(f"#ex-t-{k}", Checkbox).value]

    @property
    def output(self) -> Path:
        return Path(self.query_one("#ex-output", Input).value.strip()).expanduser()

    def _problem(self) -> str | None:
        problem = source_problem(self.query_one("#ex-source", Input).value.strip())
        if problem:
            return problem
        if not self.types:
            return "Tick at least one type (q4_k_m is what most Ollama users run)."
        out = self.output
        if not str(out) or str(out) == ".":
            return "Give an output folder."
        if out.exists() and not out.is_dir():
            return f"{out} is a file: give a folder."
        return None

    def _show(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        back, go = self.query_one("#ex-back", Button), self.query_one("#ex-go", Button)
        if self.phase == "form":
            switcher.current = "ex-form"
            self._notes()
            back.display = go.display = True
            back.label, go.label = "Back", "Export"
        elif self.phase == "running":
            switcher.current = "ex-run"
            back.display = go.display = False
        else:
            switcher.current = "ex-done"
            back.display, go.display = True, False
            back.label = "Back" if self.phase == "failed" else "Done"
            back.focus()
        self.refresh_bindings()

    def _notes(self) -> None:
        raw = self.query_one("#ex-source", Input).value.strip()
        path = Path(raw).expanduser() if raw else None
        note = ""
        if path is not None and (path / "adapter_config.json").is_file():
            note = "an adapter: merged in memory into an unquantized reload of its base"
        elif path is not None and (path / "config.json").is_file():
            note = "a model folder: converted as it is"
        self.query_one("#ex-source-note", Static).update(note)
        self.query_one("#ex-prompts", Static).update(prompts_note(path if path is not None and not source_problem(raw)
                                                                  else None))
        problem = self._problem() if raw else None
        out = self.output
        if problem is None and out.is_dir() and any(out.iterdir()):
            problem = f"{out} is not empty: Export asks before replacing it."
        self.query_one("#ex-problem", Static).update(problem or "")

    @on(Input.Changed, "#ex-source")
    def _source_changed(self, event: Input.Changed) -> None:
        raw = event.value.strip()
        if raw and source_problem(raw) is None:
            self.source = Path(raw).expanduser()
            self.query_one("#ex-output", Input).value = str(default_export_output(self.source))
        if self.phase == "form":
            self._notes()

    @on(Input.Changed, "#ex-output")
    @on(Checkbox.Changed)
    def _changed(self) -> None:
        if self.is_mounted and self.phase == "form":
            self._notes()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ex-go")
    def _go(self) -> None:
        self.action_export()

    @on(Button.Pressed, "#ex-back")
    def _back(self) -> None:
        self.action_close()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "export":
            return self.phase == "form"
        if action == "cancel_export":
            return self.phase == "running"
        if action == "close":
            return self.phase != "running"
        return True

    def action_close(self) -> None:
        if self.phase == "failed":
            self.phase = "form"
            self._show()
        elif self.phase != "running" and self.app.screen is self:
            self.app.pop_screen()

    def action_export(self) -> None:
        if self.phase != "form":
            return
        problem = self._problem()
        if problem:
            self.notify(problem, severity="error")
            return
        out = self.output
        if out.is_dir() and any(out.iterdir()):
            def confirmed(yes: bool | None) -> None:
                if yes:
                    self._start(force=True)

            self.app.push_screen(ConfirmModal(f"Replace {out.name}?", f"{out} holds files. The export replaces "
                                              "the folder once it is complete (nothing changes if it fails).",
                                              yes="Replace"), confirmed)
            return
        self._start(force=False)

    # -- running -------------------------------------------------------------------------------------------------

    def _start(self, force: bool) -> None:
        source = Path(self.query_one("#ex-source", Input).value.strip()).expanduser()
        self.phase, self.result, self.failure, self.log_lines = "running", None, None, []
        self.query_one("#ex-step", Static).update(Text("starting the export process…", style="bold"))
        self.query_one("#ex-progress", ProgressBar).update(total=1.0, progress=0.0)
        self.query_one("#ex-log", LogTail).set_lines([])
        self._show()
        self._run(export_command(source, self.output, self.types, force))

    @work(thread=True, exclusive=True, exit_on_error=False, group="export", description="Exporting to GGUF")
    def _run(self, cmd: list[str]) -> None:
        worker = get_current_worker()
        rc, tail = stream_jsonl(cmd, self.post_message, lambda: worker.is_cancelled,
                                lambda proc: setattr(self, "_proc", proc), what="the export")
        self.post_message(MergeExited(rc, None, tail))

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        if worker.group == "export":
            self.phase, self.failure = "failed", {"message": " ".join(str(error).split()), "hint": None}
            self.query_one("#ex-result", Static).update(failure_text("export", self.failure, 1, []))
            self._show()
        super().worker_failed(worker, error)

    def action_cancel_export(self) -> None:
        if self.phase == "running" and self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self.failure = {"message": "export cancelled", "hint": "nothing was written to the output folder"}

    @on(MergeLine)
    def _line(self, message: MergeLine) -> None:
        data = message.data
        if data is None:
            self.log_lines.append(message.text)
        elif data.get("kind") == "progress":
            step = str(data.get("step") or "")
            self.query_one("#ex-step", Static).update(Text(step + "…", style="bold"))
            fraction = data.get("fraction")
            if isinstance(fraction, (int, float)):
                self.query_one("#ex-progress", ProgressBar).update(progress=max(0.0, min(1.0, float(fraction))))
            self.log_lines.append(step)
        elif data.get("kind") == "done":
            self.result = data
        elif data.get("kind") == "failed":
            self.failure = data
        self.query_one("#ex-log", LogTail).set_lines(self.log_lines)

    @on(MergeExited)
    def _exited(self, message: MergeExited) -> None:
        self._proc = None
        box = self.query_one("#ex-result", Static)
        box.remove_class("-ok", "-error")
        if message.returncode == 0 and self.result is not None and self.failure is None:
            self.phase = "done"
            out = Path(self.result.get("output") or self.output)
            report = read_report(out) or {"files": self.result.get("files", [])}
            head = Text.assemble(("✔ exported", "bold green"), f"  {out}  ({report.get('seconds', '-')} s)")
            first = (report.get("files") or [{}])[0].get("file", "model.gguf")
            name = report.get("name", "mymodel")
            # the commands from the export's folder: whole at 80 columns (with the full paths they were cut), and the
            # folder on its own line, folded rather than cut
            tail = Text.assemble(str((report.get("template") or {}).get("note") or self.result.get("template", "")),
                                 "\n", ("run it, from ", "dim"), str(out), ("  (cd there first):", "dim"),
                                 "\n", ("llama.cpp: ", "dim"), f"llama-cli -m {first} -cnv", "\n",
                                 ("Ollama:    ", "dim"), f"ollama create {name} -f Modelfile")
            grid = Table.grid()
            grid.add_column(overflow="fold")
            grid.add_row(head)
            grid.add_row(report_table(report))
            prompts = (report.get("reference") or {}).get("prompts")
            grid.add_row(Text(f"checked on {prompts} prompts: {report.get('prompts_from') or GENERAL_PROMPTS}",
                              style="dim"))
            grid.add_row(tail)
            box.update(grid)
            box.add_class("-ok")
        else:
            self.phase = "failed"
            box.update(failure_text("export", self.failure, message.returncode, message.tail))
            box.add_class("-error")
        self._show()
