"""What the Playground does beyond one prompt: the model, base-model and GGUF pickers, and a batch of held-out
examples through both sides (its table, the differences first, and the example under the cursor in full).

``PlaygroundActions`` is the layer under ``PlaygroundEvents`` (the process's events: playground_events) and
``PlaygroundScreen`` (loratui.ui.screens.playground), which owns the generation process and the answer panes
(``load``, ``info``, ``other``, ``busy``, ``_client``...).
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import on, work
from textual.widgets import ContentSwitcher, DataTable, Static

from loratui.core.adapters import find_adapters
from loratui.core.export import exports_near
from loratui.core.fmt import format_bytes
from loratui.ui.screens.base import LoratuiScreen
from loratui.ui.widgets.choice_modal import ChoiceModal
from loratui.ui.widgets.modals import PromptModal
from loratui.ui.widgets.playground_view import (
    batch_cells, batch_detail, batch_progress, batch_summary, differs, held_out_choice,
)


class PlaygroundActions(LoratuiScreen):
    """The pickers and the batch of the Playground screen."""

    # -- batch ----------------------------------------------------------------------------------------------------
    def _batch_columns(self) -> None:
        """The table's columns, the left side named for what it is now (the base model or the GGUF)."""
        table = self.query_one("#pg-batch-table", DataTable)
        table.clear(columns=True)
        other = self.other
        for key, label in (("n", "#"), ("other", other), ("adapter", "adapter"), ("prompt", "prompt"),
                           ("ref", "expected"), ("other_answer", f"{other} answer"),
                           ("adapter_answer", "adapter answer")):
            table.add_column(label, key=key)

    def _render_batch(self) -> None:
        other = self.batch_other
        items = sorted(self.batch_items, key=lambda it: (not differs(it, other), it["index"]))
        table = self.query_one("#pg-batch-table", DataTable)
        table.clear()
        row = table.cursor_row
        for it in items:
            table.add_row(*batch_cells(it, other), key=str(it["index"]))
        if items:
            table.move_cursor(row=min(max(row, 0), len(items) - 1), animate=False)
        self._show_batch_detail()
        self.query_one("#pg-batch-summary", Static).update(batch_summary(items, self.batch_result, other))

    @on(DataTable.RowHighlighted, "#pg-batch-table")
    def _show_batch_detail(self) -> None:
        """The example under the cursor in full: what was asked, what was expected, both answers."""
        table = self.query_one("#pg-batch-table", DataTable)
        detail = self.query_one("#pg-batch-detail", Static)
        if not table.row_count:
            detail.update("")
            return
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        it = next((x for x in self.batch_items if str(x["index"]) == key), None)
        if it is not None:
            detail.update(batch_detail(it, self.batch_other))

    def action_batch(self) -> None:
        if not self.info or self.busy:
            self.notify("Load a model first (ctrl+o)." if not self.info else "Still working: ctrl+x stops it.",
                        severity="warning")
            return
        settings = self._settings(batch=True)  # before the file is asked for: an empty N says so now
        if settings is None:
            return

        def start(**what) -> None:
            self.batch_items, self.batch_result, self.batch_other = [], None, self.other
            self._batch_columns()
            self.batch_n, self.batch_t0 = settings["n"], time.monotonic()
            self.busy = True
            self.status = batch_progress([], self.batch_n, 0.0)
            self.query_one(ContentSwitcher).current = "pg-batch"
            self._render_batch()
            self._render_all()
            self.request = self._client().send("batch", sides=self.sides, **what, **settings)

        def chosen(path: str | None) -> None:
            if path:
                start(file=path)

        def picked(choice: str | None) -> None:
            if choice == "held-out":
                start(held_out=True)
            elif choice == "file":
                ask_file()

        def ask_file() -> None:
            self.app.push_screen(PromptModal(
                "Run held-out examples through both", value=self.info.get("batch_file") or "",
                placeholder="sample:contacts-json-eval.jsonl",
                body="A .jsonl/.csv file (alpaca, chat, text+label or prompt+response); the first N examples "
                     "(batch N) are used."), chosen)

        held = self.info.get("held_out")  # the run's validation_fraction split, made again by the process
        if not held:
            ask_file()
            return
        self.app.push_screen(ChoiceModal(
            "Run held-out examples through both",
            [("held-out", held_out_choice(held)), ("file", "a file (.jsonl/.csv)…")],
            body=f"The run's held-out rows: the ones it never trained on, split again with its seed. The first "
                 f"{settings['n']} (batch N) are used."), picked)

    # -- pickers --------------------------------------------------------------------------------------------------
    def action_pick_base(self) -> None:
        """Load the same adapter on another base model (a local copy, another revision)."""
        if not self.model_ref or not self.info.get("has_adapter"):
            self.notify("Load an adapter first (ctrl+o).", severity="warning")
            return
        model = self.model_ref
        self.app.push_screen(PromptModal("Base model for this adapter", value=str(self.info.get("base") or ""),
                                         placeholder="alias, folder or hub id"),
                             lambda v: self.load(model, base=v) if v else None)

    def action_pick_model(self) -> None:
        self._list_adapters(self.runs_dir)

    @work(thread=True, exclusive=True, exit_on_error=False, group="playground-pick", description="Finding adapters")
    def _list_adapters(self, runs_dir: Path) -> None:
        folders = [runs_dir] + [Path(p) for p in self.app.adapter_folders]
        choices = [(str(a.path), f"{a.name}  ·  {Path(a.base_model or '-').name}  ·  adapter")
                   for a in find_adapters(folders) if a.kind != "checkpoint"]
        try:  # full and head-only runs save a whole model; Merge writes runs/<run>/merged (merged-checkpoint-N)
            models = sorted(m for p in runs_dir.iterdir() if p.is_dir() for m in [p / "model", *p.glob("merged*")]
                            if (m / "config.json").is_file())
        except OSError:
            models = []
        choices += [(str(m), f"{m.parent.name}  ·  " + ("trained model" if m.name == "model" else m.name))
                    for m in models]
        self.app.call_from_thread(self._show_picker, choices)

    def _show_picker(self, choices: list[tuple[str, str]]) -> None:
        choices.append(("__path__", "type a path, an alias or a hub id…"))

        def picked(value: str | None) -> None:
            if value and value != "__path__":
                self.load(value)
            elif value == "__path__":
                self.app.push_screen(PromptModal("Load a model or adapter", placeholder="runs/NAME/adapter",
                                                 value=self.model_ref or ""),
                                     lambda v: self.load(v) if v else None)

        self.app.push_screen(ChoiceModal("Try which model?", choices,
                                         body="Adapters, trained and merged models in the runs folder."), picked)

    def action_pick_gguf(self) -> None:
        """A GGUF export beside the adapter, in llama.cpp: what the export and its quantization cost."""
        if not self.info or self.busy:
            self.notify("Load an adapter first (ctrl+o)." if not self.info else "Still working: ctrl+x stops it.",
                        severity="warning")
            return
        if self.info.get("task") == "seq-cls":
            self.notify("A classifier has no GGUF export: llama.cpp runs text generation models.", severity="warning")
            return
        choices = [(str(e.path), f"{folder}/{e.path.name}  ·  {format_bytes(e.size)}")
                   for folder, e in exports_near(self.model_ref or ".")]
        choices.append(("__path__", "type the path of a .gguf file…"))
        if self.gguf:
            choices.append(("__none__", "none: the base model again"))

        def picked(value: str | None) -> None:
            if value == "__path__":
                self.app.push_screen(PromptModal("Load a GGUF file beside the adapter", value=self.gguf.get("file", ""),
                                                 placeholder="runs/NAME/gguf/model-q8_0.gguf"),
                                     lambda v: self.load_gguf(v) if v else None)
            elif value:
                self.load_gguf(None if value == "__none__" else value)

        body = ("Its answers beside the adapter's, through llama.cpp: the same prompt tokens, the same sampling. "
                + ("Exports of this adapter first." if len(choices) > 1 + bool(self.gguf) else
                   "No export of this adapter yet (Adapters: e exports one)."))
        self.app.push_screen(ChoiceModal("Which GGUF file?", choices, body=body), picked)
