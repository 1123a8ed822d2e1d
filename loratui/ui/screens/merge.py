"""Merge wizard: adapter -> base model -> dtype -> output folder -> confirm, then the merge subprocess.

The merge itself runs as ``python -m loratui merge ADAPTER OUT [--base B] [--dtype D] --jsonl`` (heavy imports stay
out of the app); a thread worker reads its JSON lines and posts them as messages.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, ContentSwitcher, Footer, Input, Label, ProgressBar, RadioSet, Static
from textual.worker import Worker

from loratui.core.adapters import AdapterInfo, read_adapter
from loratui.core.fmt import format_bytes
from loratui.core.merge_check import DEFAULT_MERGE_DTYPE, DTYPE_HELP, MERGE_DTYPES
from loratui.ui.screens.merge_parts import DtypeChoice, default_output, in_runs, merge_command
from loratui.ui.screens.merge_run import MergeRunning
from loratui.ui.widgets.form import FormInput
from loratui.ui.widgets.log_tail import LogTail

STEPS = ("adapter", "base", "dtype", "output", "confirm")
STEP_LABELS = ("Adapter", "Base model", "Dtype", "Output", "Confirm")


class MergeScreen(MergeRunning):
    """The merge wizard, prefilled from ``adapter`` when given."""

    DEFAULT_CSS = """
    MergeScreen #mg-title { height: 1; padding: 0 1; background: $boost; }
    MergeScreen #mg-steps { height: 1; padding: 0 1; margin-bottom: 1; }
    MergeScreen ContentSwitcher { height: 1fr; padding: 0 2; }
    MergeScreen .step { height: auto; }
    MergeScreen .question { text-style: bold; margin-bottom: 1; }
    MergeScreen .note { color: $text-muted; margin-top: 1; }
    MergeScreen .problem { color: $error; margin-top: 1; }
    MergeScreen #mg-buttons { height: 3; padding: 0 2; align-horizontal: right; }
    MergeScreen #mg-buttons Button { margin-left: 1; }
    MergeScreen #mg-progress { margin: 1 0; }
    MergeScreen #mg-run-log { height: 1fr; color: $text-muted; }
    MergeScreen #mg-result.-error { border: heavy $error; background: $error 15%; padding: 0 1; }
    MergeScreen #mg-result.-ok { border-left: thick $success; background: $success 10%; padding: 0 1; }
    """

    BINDINGS = [
        Binding("ctrl+n", "next", "Next"),
        Binding("escape", "back", "Back"),
        Binding("ctrl+x", "cancel_merge", "Cancel merge"),
        Binding("ctrl+e", "export", "Export GGUF"),
        Binding("f8", "export", "Export GGUF", show=False, priority=True),  # ctrl+e is end-of-line in a field
    ]

    def __init__(self, adapter: Path | None = None, *, name: str | None = None, id: str | None = None):
        super().__init__(name=name, id=id)
        self.adapter: Path | None = Path(adapter) if adapter else None
        self.info: AdapterInfo | None = None
        self.step = 0
        self.phase = "wizard"  # wizard | running | done | failed
        self.result: dict | None = None
        self.failure: dict | None = None
        self.log_lines: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._output_user_set = False

    # -- layout --------------------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(Text("Merge an adapter into its base model", style="bold"), id="mg-title")
        yield Static(id="mg-steps")
        with ContentSwitcher(initial="step-adapter"):
            with Vertical(id="step-adapter", classes="step"):
                yield Label("Which adapter? (a folder holding adapter_config.json)", classes="question")
                yield FormInput(str(self.adapter or ""), id="mg-adapter")  # placeholders: the app's runs folder
                yield Static(id="mg-adapter-info", classes="note")
                yield Static("F8: export it to GGUF for llama.cpp and Ollama instead (merged in memory)",
                             classes="note")
            with Vertical(id="step-base", classes="step"):
                yield Label("Base model to merge into", classes="question")
                yield FormInput(placeholder="hub id or local folder", id="mg-base")
                yield Static("Prefilled from the adapter's base_model_name_or_path. A QLoRA adapter's base is "
                             "reloaded unquantized in the dtype chosen next.", classes="note")
            with Vertical(id="step-dtype", classes="step"):
                yield Label("Weights dtype of the merged model", classes="question")
                with RadioSet(id="mg-dtype"):
                    for dtype in MERGE_DTYPES:
                        yield DtypeChoice(f"{dtype}  ({DTYPE_HELP[dtype]})", value=dtype == DEFAULT_MERGE_DTYPE,
                                          id=f"dtype-{dtype}")
            with Vertical(id="step-output", classes="step"):
                yield Label("Output folder (new or empty)", classes="question")
                yield FormInput(id="mg-output")
                yield Static(id="mg-output-note", classes="note")
            with Vertical(id="step-confirm", classes="step"):
                yield Label("Merge with these settings?", classes="question")
                yield Static(id="mg-summary")
            with Vertical(id="step-run", classes="step"):
                yield Static(id="mg-run-step")
                yield ProgressBar(total=1.0, show_eta=False, id="mg-progress")
                yield LogTail(id="mg-run-log")
            with Vertical(id="step-result", classes="step"):
                yield Static(id="mg-result")
        with Horizontal(id="mg-buttons"):
            yield Button("Back", id="mg-back")
            yield Button("Next", id="mg-next", variant="primary")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        runs = self.app.runs_dir
        self.query_one("#mg-adapter", Input).placeholder = in_runs(runs, "adapter")
        self.query_one("#mg-output", Input).placeholder = in_runs(runs, "merged")
        if self.adapter is not None:
            self._load_adapter(self.adapter)
        self._show()

    def on_unmount(self) -> None:
        self._kill()

    def typing(self) -> bool:
        """A wizard step's field has the focus: letters there are its text (escape on the first step leaves the
        field, and the letter keys switch screens again)."""
        return self.phase == "wizard" and self.focused is not None

    def worker_failed(self, worker: Worker, error: BaseException) -> None:
        if worker.group == "merge":  # the wizard must not stay 'merging' forever
            self._kill()
            self._proc = None
            self.phase = "failed"
            self.query_one("#mg-result", Static).update(Text.assemble(("✖ merge failed", "bold red"), "  ",
                                                                       " ".join(str(error).split())))
            self._show()
        super().worker_failed(worker, error)

    def set_adapter(self, adapter: Path | None) -> None:
        """Start the wizard over for ``adapter`` (ignored while a merge runs)."""
        if self.phase == "running" or adapter is None:
            return
        self._output_user_set = False
        self.query_one("#mg-adapter", Input).value = str(adapter)
        self._load_adapter(Path(adapter))
        self.phase, self.step = "wizard", 0
        self._show()

    # -- wizard --------------------------------------------------------------------------------------------------

    def _load_adapter(self, path: Path) -> None:
        self.adapter = path
        self.info = read_adapter(path) if (path / "adapter_config.json").is_file() else None
        if self.info is not None:
            self.query_one("#mg-base", Input).value = self.info.base_model or ""
        if not self._output_user_set:
            self.query_one("#mg-output", Input).value = str(default_output(path))

    @property
    def dtype(self) -> str:
        pressed = self.query_one("#mg-dtype", RadioSet).pressed_button
        return pressed.id.removeprefix("dtype-") if pressed is not None and pressed.id else DEFAULT_MERGE_DTYPE

    @property
    def base(self) -> str:
        return self.query_one("#mg-base", Input).value.strip()

    @property
    def output(self) -> Path:
        return Path(self.query_one("#mg-output", Input).value.strip()).expanduser()

    def _problem(self, step: int) -> str | None:
        """Why the wizard can't go past ``step`` (None: fine)."""
        name = STEPS[step]
        if name == "adapter":
            raw = self.query_one("#mg-adapter", Input).value.strip()
            if not raw:
                return "Give the adapter's folder."
            path = Path(raw).expanduser()
            if not (path / "adapter_config.json").is_file():
                return f"{path} holds no adapter_config.json."
        if name == "base" and not self.base:
            return "Give the base model (a hub id or a local folder)."
        if name == "output":
            out = self.output
            if not str(out) or str(out) == ".":
                return "Give an output folder."
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                return f"{out} exists and is not empty: choose another folder."
            if self.adapter is not None and out.resolve() == self.adapter.resolve():
                return "The output folder can't be the adapter folder."
        return None

    def _show(self) -> None:
        """Show the current step (or the run / result pane) and the breadcrumb."""
        switcher = self.query_one(ContentSwitcher)
        crumbs = Text()
        for i, label in enumerate(STEP_LABELS):
            if i:
                crumbs.append(" › ", style="dim")
            style = "bold reverse" if (i == self.step and self.phase == "wizard") else "" if i < self.step else "dim"
            crumbs.append(f" {i + 1} {label} ", style=style)
        if self.phase != "wizard":
            crumbs.append(" › ", style="dim")
            crumbs.append(" merging " if self.phase == "running" else f" {self.phase} ", style="bold reverse")
        self.query_one("#mg-steps", Static).update(crumbs)
        back, nxt = self.query_one("#mg-back", Button), self.query_one("#mg-next", Button)
        if self.phase == "wizard":
            name = STEPS[self.step]
            switcher.current = f"step-{name}"
            if name == "adapter":
                self._adapter_note()
            if name == "output":
                problem = self._problem(self.step)
                self.query_one("#mg-output-note", Static).update(problem or "")
            if name == "confirm":
                self.query_one("#mg-summary", Static).update(self._summary())
            back.disabled = self.step == 0
            nxt.label = "Merge" if name == "confirm" else "Next"
            nxt.disabled = False
            back.display = nxt.display = True
            focus = {"adapter": "#mg-adapter", "base": "#mg-base", "dtype": "#mg-dtype", "output": "#mg-output",
                     "confirm": "#mg-next"}[name]
            self.query_one(focus).focus()
        elif self.phase == "running":
            switcher.current = "step-run"
            back.display = nxt.display = False
        else:
            switcher.current = "step-result"
            back.display = True
            back.disabled = False
            back.label = "Back" if self.phase == "failed" else "Merge another"
            nxt.display = self.phase == "done"  # the next step for a merged model: GGUF for llama.cpp, Ollama
            nxt.label = "Export GGUF"
            (nxt if self.phase == "done" else back).focus()
        self.refresh_bindings()

    def _adapter_note(self) -> None:
        note = self.query_one("#mg-adapter-info", Static)
        info = self.info
        if info is None:
            note.update(Text(self._problem(0) or "", style="red") if self.query_one("#mg-adapter", Input).value else "")
            return
        note.update(Text.assemble(
            (info.name, "bold"), f"  base {info.base_model or '-'} · r {info.r} · α {info.alpha} · ",
            f"{info.targets_text} · {format_bytes(info.size)}"))

    def _summary(self) -> Table:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("adapter", str(self.adapter))
        grid.add_row("base model", self.base)
        grid.add_row("dtype", self.dtype)
        grid.add_row("output", str(self.output))
        if self.info is not None and self.info.base_model and self.base != self.info.base_model:
            grid.add_row(Text("note", style="yellow"),
                         Text(f"differs from the adapter's base ({self.info.base_model})", style="yellow"))
        return grid

    @on(Input.Changed, "#mg-adapter")
    def _adapter_changed(self, event: Input.Changed) -> None:
        path = Path(event.value.strip()).expanduser() if event.value.strip() else None
        if path is not None and (path / "adapter_config.json").is_file():
            self._load_adapter(path)
        else:
            self.info = None
        if self.phase == "wizard" and STEPS[self.step] == "adapter":
            self._adapter_note()

    @on(Input.Changed, "#mg-output")
    def _output_changed(self, event: Input.Changed) -> None:
        if self.is_mounted and self.phase == "wizard" and STEPS[self.step] == "output":
            self._output_user_set = True
            self.query_one("#mg-output-note", Static).update(self._problem(self.step) or "")

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_next()

    @on(Button.Pressed, "#mg-next")
    def _next_pressed(self) -> None:
        if self.phase == "done":
            self.action_export()
        else:
            self.action_next()

    @on(Button.Pressed, "#mg-back")
    def _back_pressed(self) -> None:
        if self.phase in ("done", "failed"):
            self.phase, self.step = "wizard", (3 if self.phase == "failed" else 0)
            self._show()
        else:
            self.action_back()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "next":
            return self.phase == "wizard"
        if action == "back":
            return self.phase in ("wizard", "done", "failed")
        if action == "cancel_merge":
            return self.phase == "running"
        if action == "export":
            return self.phase == "done" or (self.phase == "wizard" and self.adapter is not None)
        return True

    def action_export(self) -> None:
        """GGUF for llama.cpp and Ollama: of the merged model after a merge, else of the adapter (merged in memory)."""
        from loratui.ui.screens.merge_export import ExportScreen

        if self.phase == "done":
            source = Path((self.result or {}).get("output") or self.output)
        elif self.phase == "wizard" and self.adapter is not None:
            source = self.adapter
        else:
            return
        self.app.push_screen(ExportScreen(source))

    def action_next(self) -> None:
        if self.phase != "wizard":
            return
        problem = self._problem(self.step)
        if problem:
            self.notify(problem, severity="error")
            if STEPS[self.step] == "adapter":
                self._adapter_note()
            return
        if STEPS[self.step] == "adapter":
            self._load_adapter(Path(self.query_one("#mg-adapter", Input).value.strip()).expanduser())
        if STEPS[self.step] == "confirm":
            self._start()
            return
        self.step += 1
        self._show()

    def action_back(self) -> None:
        if self.phase in ("done", "failed"):
            self._back_pressed()
            return
        if self.phase == "wizard" and self.step > 0:
            self.step -= 1
            self._show()
        elif self.phase == "wizard":
            if len(self.app.screen_stack) > 1 and self.app.screen is self:
                self.app.pop_screen()
            elif self.focused is not None:
                self.set_focus(None)  # out of the field: the letter keys switch screens again

    # -- running (the rest: MergeRunning) ------------------------------------------------------------------------

    def _start(self) -> None:
        assert self.adapter is not None
        self.phase, self.result, self.failure, self.log_lines = "running", None, None, []
        self.query_one("#mg-run-step", Static).update(Text("starting the merge process…", style="bold"))
        self.query_one("#mg-progress", ProgressBar).update(total=1.0, progress=0.0)
        self.query_one("#mg-run-log", LogTail).set_lines([])
        self._show()
        self._run(merge_command(self.adapter, self.output, self.base or None, self.dtype), self.output)
