"""Try an adapter: the base model's and the adapter's answers side by side, streamed; labels for classifiers;
a batch of held-out prompts through both with a metric, the examples where they differ first. A GGUF export can
take the base model's place (ctrl+l): its answers in llama.cpp beside the adapter's, so the user sees what the export
and its quantization cost.

Generation runs in its own process (``loratui.core.playground``), which loads the base once and toggles the adapter,
so typing never stalls and only one copy of the weights is in memory. It uses the GPU unless a run holds it, and
ends while the user is away (10 minutes on other screens, or at once when a run starts training while the model is on
the GPU); coming back loads the same model again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Checkbox, ContentSwitcher, Footer, Input, Label, Static, TextArea

from loratui.core.fmt import format_duration
from loratui.core.playground import PlaygroundClient
from loratui.core.runs import live_runs
from loratui.ui.screens.playground_events import SIDES, Answer, PlaygroundEvent, PlaygroundEvents  # noqa: F401
from loratui.ui.widgets.form import FormInput
from loratui.ui.widgets.playground_view import NUMBER_FIELDS, prob_bars, read_number, title_text
from loratui.ui.widgets.tables import RowTable

#: seconds on other screens after which the Playground's generation process ends, giving back its model's memory
#: (about 1 GB of RAM for the embedded model, far more for a 7B on the GPU); coming back loads the same model again
AWAY_FREE_S = 600.0
#: seconds between looks, while away, at the runs folder: a model on the GPU is freed as soon as a run trains (one
#: launched from Setup, resumed in Runs or started by the queue), whose memory fit counted on the whole card
AWAY_POLL_S = 3.0


class PlaygroundScreen(PlaygroundEvents):
    DEFAULT_CSS = """
    PlaygroundScreen #pg-title { height: 1; padding: 0 1; background: $boost; }
    PlaygroundScreen #pg-status { height: 1; padding: 0 1; color: $text-muted; }
    PlaygroundScreen #pg-settings { height: 1; padding: 0 1; }
    PlaygroundScreen #pg-settings Label { width: auto; padding: 0 1 0 0; }
    PlaygroundScreen #pg-gen-settings { width: auto; height: 1; }
    PlaygroundScreen #pg-settings Input { width: 5; height: 1; border: none; padding: 0; margin-right: 1; }
    PlaygroundScreen #pg-settings Checkbox { width: auto; height: 1; border: none; padding: 0; margin-right: 1;
                                             background: transparent; }
    PlaygroundScreen #pg-prompt { height: 3; background: $boost; }
    PlaygroundScreen ContentSwitcher { height: 1fr; }
    PlaygroundScreen #pg-answers { height: 1fr; }
    PlaygroundScreen .pane { width: 1fr; height: 1fr; border: round $primary 40%; padding: 0 1; }
    PlaygroundScreen #pg-batch { height: 1fr; }
    PlaygroundScreen #pg-batch-summary { height: auto; padding: 0 1; }
    PlaygroundScreen #pg-batch-table { height: 1fr; }
    PlaygroundScreen #pg-batch-detail { height: auto; max-height: 6; padding: 0 1; border-top: solid $primary 40%; }
    PlaygroundScreen.-cls #pg-gen-settings { display: none; }
    """

    TEXT_ENTRY = True

    def typing(self) -> bool:
        return isinstance(self.focused, (Input, TextArea))

    BINDINGS = [
        Binding("ctrl+g", "generate", "Generate", priority=True),
        Binding("ctrl+o", "pick_model", "Model", priority=True),
        Binding("ctrl+e", "pick_base", "Base model", priority=True, show=False),
        Binding("ctrl+l", "pick_gguf", "GGUF", priority=True),
        Binding("ctrl+b", "batch", "Batch", priority=True),
        Binding("ctrl+x", "stop", "Stop", priority=True),
        Binding("ctrl+t", "toggle_view", "Answers/batch", priority=True),
        Binding("escape", "leave_field", "Leave field", show=False),
    ]

    def __init__(self, model: str | Path | None = None, *, gguf: str | Path | None = None,
                 worker_command: list[str] | None = None, name: str | None = None, id: str | None = None):
        super().__init__(name=name, id=id)
        self.model_ref: str | None = str(model) if model else None
        self.gguf_ref: str | None = str(gguf) if gguf else None  # loaded with the model
        self.base_ref: str | None = None  # the base model the user put under the adapter (ctrl+e), if any
        self.freed = ""  # why the process was ended while the user was away (it loads again on return)
        self._left_at = 0.0
        self._away: Any = None  # the timer that looks while the user is away
        self.gguf: dict[str, Any] = {}  # the GGUF file beside the adapter, as the process loaded it
        self.worker_command = worker_command
        self.client: PlaygroundClient | None = None
        self.info: dict[str, Any] = {}
        self.answers: dict[str, Answer] = {s: Answer() for s in SIDES}
        self.batch_items: list[dict] = []
        self.batch_n, self.batch_t0 = 0, 0.0  # examples asked for, and when
        self.batch_result: dict | None = None
        self.batch_other = "base"  # the side the batch compared with the adapter
        self.request: int | None = None
        self.busy = False
        self.status = "pick an adapter or a model: ctrl+o"
        self.events: list[dict] = []  # every event seen (tests read it)

    @property
    def runs_dir(self) -> Path:
        return Path(self.app.runs_dir)

    @property
    def other(self) -> str:
        """What the adapter is compared with: the GGUF file when one is loaded, else the base model."""
        return "gguf" if self.gguf else "base"

    @property
    def sides(self) -> list[str]:
        return ["adapter", self.other] if self.info.get("has_adapter") or self.gguf else ["adapter"]

    def compose(self) -> ComposeResult:
        yield Static(id="pg-title")
        yield Static(id="pg-status")
        with Horizontal(id="pg-settings"):
            with Horizontal(id="pg-gen-settings"):
                yield Label("max tokens")
                yield FormInput("64", id="pg-max-new", type="integer", compact=True)
                yield Label("temp")
                yield FormInput("0.7", id="pg-temperature", type="number", compact=True)
                yield Label("top-p")
                yield FormInput("0.9", id="pg-top-p", type="number", compact=True)
                yield Checkbox("greedy", True, id="pg-greedy", compact=True)
                yield Checkbox("chat template", True, id="pg-chat", compact=True)
            yield Label("N")
            yield FormInput("20", id="pg-batch-n", type="integer", compact=True)
        yield TextArea(id="pg-prompt", soft_wrap=True, show_line_numbers=False, compact=True,
                       placeholder="your prompt here; ctrl+g asks both models")
        with ContentSwitcher(initial="pg-answers"):
            with Horizontal(id="pg-answers"):
                for side in SIDES:
                    with VerticalScroll(classes="pane", id=f"pg-pane-{side}"):
                        yield Static(id=f"pg-{side}")
            with Vertical(id="pg-batch"):
                yield Static(id="pg-batch-summary")
                yield RowTable(id="pg-batch-table")
                yield Static(id="pg-batch-detail")
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#pg-pane-base").border_title = "base model"
        self.query_one("#pg-pane-gguf").border_title = "gguf"
        self.query_one("#pg-pane-adapter").border_title = "adapter"
        self._batch_columns()
        self._render_all()
        self.query_one("#pg-prompt", TextArea).focus()
        if self.model_ref:
            self.load(self.model_ref, gguf=self.gguf_ref)

    def on_resize(self) -> None:
        if self.is_mounted:
            self._render_all()

    def on_unmount(self) -> None:
        if self.client is not None:
            self.client.close(timeout=1.0)
            self.client = None

    # -- the process --------------------------------------------------------------------------------------------
    def _client(self) -> PlaygroundClient:
        if self.client is None or not self.client.running:
            self.client = PlaygroundClient(lambda ev: self.post_message(PlaygroundEvent(ev)),
                                           command=self.worker_command,
                                           log_path=self.runs_dir / ".playground.log")
        return self.client

    def load(self, model: str | Path, base: str | None = None, gguf: str | Path | None = None) -> None:
        """Load a model or adapter (also what the Adapters screen's "try it" calls); ``base`` replaces the base
        model the adapter names (another copy or a local folder of it); ``gguf`` puts that file beside it."""
        if self.busy and self.client is not None:
            self.client.stop_generation()  # what the previous model was still answering is cut short...
        self.request = None  # ...and dropped when it comes (``_stale``): it belongs to that model
        self.model_ref = str(model)
        self.base_ref = base
        self.freed = ""  # this load is the one coming back would have made
        self.gguf_ref = str(gguf) if gguf else None
        self.info, self.gguf = {}, {}
        self.answers = {s: Answer() for s in SIDES}
        self.batch_items, self.batch_result = [], None
        self.busy = True
        self.status = f"starting the generation process for {Path(self.model_ref).name}…"
        self.query_one(ContentSwitcher).current = "pg-answers"
        self._batch_columns()
        self._render_batch()
        self._render_all()
        self._load(self.model_ref, self.runs_dir, base, self.gguf_ref)

    @work(thread=True, exclusive=True, exit_on_error=False, group="playground-load", description="Loading model")
    def _load(self, model: str, runs_dir: Path, base: str | None = None, gguf: str | None = None) -> None:
        busy = training_runs(runs_dir)
        client = self._client()
        client.start()
        self.request = client.send("load", model=model, device="auto", gpu_busy=", ".join(busy) or None, base=base,
                                   gguf=gguf)

    def try_target(self) -> Path | None:
        """The adapter on screen (what g merges from here); None for a plain model."""
        if self.model_ref and self.info.get("has_adapter") and (Path(self.model_ref) / "adapter_config.json").is_file():
            return Path(self.model_ref)
        return None

    # -- away: the model's memory given back --------------------------------------------------------------------
    def on_screen_suspend(self) -> None:
        self._stop_looking()  # one timer at a time
        if self.client is not None and self.client.running:
            self._left_at = time.monotonic()
            self._away = self.set_interval(AWAY_POLL_S, self._look_while_away)

    def on_screen_resume(self) -> None:
        self._stop_looking()
        if self.freed and self.model_ref:
            why, self.freed = self.freed, ""
            answers, batch = self.answers, (self.batch_items, self.batch_result)
            self.load(self.model_ref, self.base_ref, self.gguf_ref)
            self.answers, (self.batch_items, self.batch_result) = answers, batch  # the same model: still its own
            self.status = f"loading {Path(self.model_ref).name} again (freed while away: {why})…"
            self._render_batch()
            self._render_all()

    def _stop_looking(self) -> None:
        if self._away is not None:
            self._away.stop()
            self._away = None

    def _look_while_away(self) -> None:
        if self.client is None or self.busy:  # a batch left running goes on: the user asked for it
            return
        if self in self.app.screen_stack:  # a dialog over the Playground: the user is still here
            self._left_at = time.monotonic()
            return
        away = time.monotonic() - self._left_at
        if away >= AWAY_FREE_S:
            self._free(f"{format_duration(away)} on other screens")
        elif str(self.info.get("device", "")).startswith("cuda"):
            self._free_if_training()

    @work(thread=True, exclusive=True, exit_on_error=False, group="playground-away", description="Runs training")
    def _free_if_training(self) -> None:
        live = training_runs(self.runs_dir)
        if live:
            self.app.call_from_thread(self._free, f"{live[0]} is training and needs the GPU")

    def _free(self, why: str) -> None:
        if self.client is None or self.busy or self in self.app.screen_stack:
            return
        client, self.client = self.client, None
        self.freed, self.info, self.gguf = why, {}, {}
        self.status = f"model freed ({why}); it loads again when you come back"
        self._stop_looking()
        self.run_worker(lambda: client.close(timeout=2.0), thread=True, group="playground-close",
                        description="Ending the generation process", exit_on_error=False)

    def load_gguf(self, path: str | None) -> None:
        """Put a GGUF file beside the loaded adapter (None: back to the base model)."""
        self.gguf_ref = path
        self.busy = True
        self.status = f"loading {Path(path).name} in llama.cpp…" if path else "dropping the GGUF file…"
        self._render_all()
        self.request = self._client().send("load_gguf", path=path)

    # -- rendering ----------------------------------------------------------------------------------------------
    def _render_all(self) -> None:
        info = self.info
        title = self.query_one("#pg-title", Static)
        title.update(title_text(info, self.model_ref, title.content_region.width or self.size.width - 2))
        self.query_one("#pg-status", Static).update(Text(self.status, style="red" if self.status.startswith("✖")
                                                         else ""))
        has_adapter = bool(info.get("has_adapter", True))
        self.query_one("#pg-pane-base").display = has_adapter and not self.gguf
        self.query_one("#pg-pane-gguf").display = bool(self.gguf)
        if self.gguf:
            self.query_one("#pg-pane-gguf").border_title = f"GGUF {self.gguf.get('name')}"  # its type: the status
        if info.get("base"):
            self.query_one("#pg-pane-base").border_title = f"base: {Path(str(info['base'])).name}"
        self.query_one("#pg-pane-adapter").border_title = "adapter" if has_adapter else "model"
        for side in SIDES:
            self._render_answer(side)

    def _render_answer(self, side: str) -> None:
        a = self.answers[side]
        body = Text()
        if a.probs:
            body = prob_bars(a.probs)
            if side == "base" and self.info.get("task") == "seq-cls":
                body.append("(the base model's head is untrained)", style="dim")
        elif a.text or a.busy:
            body.append(a.text)
            if a.busy:
                body.append("▌", style="blink")
        else:
            body.append("—", style="dim")
        if a.stats:
            body.append(f"\n{a.stats}", style="dim")
        self.query_one(f"#pg-{side}", Static).update(body)

    # -- actions ------------------------------------------------------------------------------------------------
    def _settings(self, batch: bool = False) -> dict[str, Any] | None:
        """What a request sends from the settings row, or None once a box it needs is empty or out of range: a
        one-line message names it, and it takes the focus. Max tokens counts where the model writes answers, temp
        and top-p where it samples, N for a batch; a box not used sends its default."""
        greedy = self.query_one("#pg-greedy", Checkbox).value
        writes = self.info.get("task") != "seq-cls"
        used = {"pg-max-new": writes, "pg-temperature": writes and not greedy, "pg-top-p": writes and not greedy,
                "pg-batch-n": batch}
        values: dict[str, float | int | None] = {}
        for box_id, spec in NUMBER_FIELDS.items():
            values[box_id] = spec.default
            if used[box_id]:
                box = self.query_one(f"#{box_id}", Input)
                values[box_id], error = read_number(box_id, box.value)
                if error:
                    self.notify(error, severity="warning")
                    box.focus()
                    return None
        out = dict(max_new_tokens=int(values["pg-max-new"]), temperature=values["pg-temperature"],
                   top_p=values["pg-top-p"], greedy=greedy, chat_template=self.query_one("#pg-chat", Checkbox).value)
        return out | ({"n": int(values["pg-batch-n"])} if batch else {})

    def action_generate(self) -> None:
        if not self.info or self.busy:
            self.notify("Load a model first (ctrl+o)." if not self.info else "Still working: ctrl+x stops it.",
                        severity="warning")
            return
        prompt = self.query_one("#pg-prompt", TextArea).text.strip()
        if not prompt:
            self.notify("Write a prompt first.", severity="warning")
            return
        settings = self._settings()
        if settings is None:
            return
        self.query_one(ContentSwitcher).current = "pg-answers"
        sides = self.sides
        self.answers = {s: Answer(busy=s in sides) for s in SIDES}
        self.busy = True
        self.status = "generating…" if self.info.get("task") != "seq-cls" else "classifying…"
        self._render_all()
        self.request = self._client().send("generate", prompt=prompt, sides=sides, **settings)

    def action_stop(self) -> None:
        if self.client is not None and self.busy:
            self.client.stop_generation()
            self.status = "stopping…"
            self._render_all()

    def action_toggle_view(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        switcher.current = "pg-batch" if switcher.current == "pg-answers" else "pg-answers"

    def action_leave_field(self) -> None:
        self.set_focus(None)


def training_runs(runs_dir: Path) -> list[str]:
    """The runs whose engine is alive (starting, running, stalled: each holds or is taking GPU memory), by name;
    only those folders are read whole, so a folder of many finished runs costs a file read each."""
    return [s.name for s in live_runs(runs_dir)]
