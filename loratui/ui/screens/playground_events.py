"""What the Playground's generation process says, put on screen: a model loaded, tokens streamed into the answer
panes, labels for a classifier, a batch's items, errors and the process's exit. Requests carry an id: an answer to
one no longer on screen (the previous model's, after a switch) is dropped.

``PlaygroundEvents`` sits between ``PlaygroundActions`` (pickers, batch) and ``PlaygroundScreen``
(loratui.ui.screens.playground), which owns the process (``client``, ``load``) and the rendering (``_render_all``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from textual import on
from textual.message import Message

from loratui.core.fmt import format_bytes
from loratui.ui.screens.playground_actions import PlaygroundActions
from loratui.ui.widgets.playground_view import batch_progress

SIDES = ("base", "gguf", "adapter")  # left to right; the GGUF pane shows instead of the base model's
RESULTS = ("token", "done", "classified", "batch_item", "batch_done")  # events that answer one request (its id)


@dataclass
class PlaygroundEvent(Message):
    event: dict


@dataclass
class Answer:
    text: str = ""
    stats: str = ""
    probs: list[tuple[str, float]] = field(default_factory=list)
    busy: bool = False


class PlaygroundEvents(PlaygroundActions):
    """The generation process's events on the Playground screen."""

    def _stale(self, ev: dict) -> bool:
        """An answer to a request other than the one on screen: the previous model's, still coming after a switch."""
        return ev.get("kind") in RESULTS and ev.get("id") != self.request

    @on(PlaygroundEvent)
    def _event(self, message: PlaygroundEvent) -> None:
        ev = message.event
        self.events.append(ev)
        if self._stale(ev):
            return
        kind = ev.get("kind")
        side = ev.get("side")
        if kind == "loading":
            self.status = f"loading {Path(str(ev.get('what'))).name} on {ev.get('device')}…"
        elif kind == "loaded":
            self.info = ev
            self.busy = False
            self.set_class(ev.get("task") == "seq-cls", "-cls")
            note = ev.get("device_note") or ""
            what = "classify a text" if ev.get("task") == "seq-cls" else "write a prompt"
            self.status = f"loaded in {ev.get('seconds', 0):.1f} s; {what}, ctrl+g" + (f" · {note}" if note else "")
            if ev.get("batch_file") or ev.get("held_out"):
                self.status += " · ctrl+b runs the held-out " + ("file" if ev.get("batch_file") else "rows")
            self.busy = bool(self.gguf_ref)  # the GGUF file comes next
        elif kind == "gguf_loaded":
            self.gguf, self.busy = (ev if ev.get("file") else {}), False
            self.answers = {s: Answer() for s in SIDES}
            if ev.get("file"):
                self.status = (f"{ev.get('name')} ({ev.get('type')}, {format_bytes(ev.get('size') or 0)}) beside "
                               f"the adapter, in llama.cpp; ctrl+g")
            else:
                self.status = "the base model beside the adapter again; ctrl+g"
        elif kind == "token" and side in self.answers:
            self.answers[side].text += ev.get("text", "")
            self._render_answer(side)
            return
        elif kind == "done" and side in self.answers:
            a = self.answers[side]
            a.text, a.busy = ev.get("text", a.text), False
            tps = ev.get("tokens_per_s")
            a.stats = f"{ev.get('tokens', 0)} tokens · {tps:,.1f} tok/s" if tps else f"{ev.get('tokens', 0)} tokens"
            if ev.get("stopped"):
                a.stats += " · stopped"
            self._finish_if_done()
        elif kind == "classified" and side in self.answers:
            a = self.answers[side]
            a.probs, a.busy, a.text = [(n, p) for n, p in ev.get("probs", [])], False, ""
            self._finish_if_done()
        elif kind == "batch_item":
            self.batch_items.append(ev)
            self.status = batch_progress(self.batch_items, self.batch_n, time.monotonic() - self.batch_t0)
            self._render_all()
            self._render_batch()
            return
        elif kind == "batch_done":
            self.batch_result = ev
            self.busy = False
            self.status = f"batch of {ev.get('n')} from {ev.get('file')} in {ev.get('seconds', 0):.0f} s"
            self._render_batch()
        elif kind == "error":
            self.busy = False
            self.gguf_ref = self.gguf.get("file")  # a GGUF file that did not load: what was beside the adapter stays
            for a in self.answers.values():
                a.busy = False
            msg = ev.get("message", "error")
            self.status = f"✖ {msg}"
            self.notify(msg + (f"\n{ev['hint']}" if ev.get("hint") else ""), title="Playground", severity="error")
        elif kind == "exited":
            self.busy = False
            if self.client is not None and not self.client.running:
                self.client = None
                self.status = f"the generation process exited (code {ev.get('code')}); ctrl+o loads again"
        self._render_all()

    def _finish_if_done(self) -> None:
        if not any(a.busy for a in self.answers.values()):
            self.busy = False
            self.status = "done · ctrl+g again, ctrl+b for a batch"
            gguf, adapter = self.answers["gguf"], self.answers["adapter"]
            if self.gguf and gguf.stats and adapter.stats:  # what the export changed in this answer
                gguf.stats += " · = adapter" if gguf.text.strip() == adapter.text.strip() else " · ≠ adapter"
