"""The playground's generation process: loads a base model once, toggles the adapter, streams answers as JSON lines.

    python -m loratui.train.playground_worker        (the app starts it; commands on stdin, events on stdout)

Commands (one JSON object a line): ``load`` {model, device, gguf}, ``load_gguf`` {path} (a GGUF export beside the
adapter, side 'gguf'; no path drops it), ``generate`` {id, prompt, max_new_tokens, temperature, top_p, greedy,
chat_template, system, seed, sides}, ``classify`` {id, text}, ``batch`` {id, file, n, max_new_tokens, ...; or
held_out: true, the run's validation_fraction split}, ``stop`` (ends the current generation early), ``quit``.
Events: ready, loading, loaded (task, labels, device, memory before/after, batch_file, held_out {fraction, rows}),
gguf_loading, gguf_loaded (file, type, size, seconds; file null when dropped), token (id, side, text), done,
classified, batch_item, batch_done, error (message, hint). The adapter's answers come from the PEFT model, the
base model's from the same weights under ``model.disable_adapter()``: one copy of the base in memory, not two (the
model and what it does: ``loratui.train.playground_model``; this module is the process around it).
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading

from loratui.core.errors import LoratuiError
from loratui.train.examples import (  # noqa: F401 - re-exported
    exact, macro_f1, read_examples, render_example, valid_json,
)
from loratui.train.playground_model import Emit, Playground, _out, memory_now  # noqa: F401 - re-exported


def serve(stdin=None, emit: Emit = _out) -> int:
    """Read commands until ``quit`` or end of input; a ``stop`` line interrupts the running command."""
    stdin = stdin or sys.stdin
    pg = Playground(emit)
    inbox: "queue.Queue[dict | None]" = queue.Queue()

    def reader() -> None:
        for line in stdin:
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
            except json.JSONDecodeError:
                emit("error", id=None, message=f"not JSON: {line[:80]}", hint=None)
                continue
            if cmd.get("cmd") == "stop":
                pg.stop.set()
                continue
            inbox.put(cmd)
            if cmd.get("cmd") == "quit":
                return
        pg.stop.set()  # the app is gone (its end of the pipe closed): cut the current generation short
        inbox.put(None)

    threading.Thread(target=reader, daemon=True, name="playground-stdin").start()
    emit("ready", pid=os.getpid())
    while True:
        cmd = inbox.get()
        if cmd is None or cmd.get("cmd") == "quit":
            pg.load_gguf(None, quiet=True)  # llama.cpp freed before the interpreter tears its module down
            return 0
        pg.stop.clear()
        name = cmd.get("cmd")
        try:
            if name == "load":
                pg.load(cmd["model"], cmd.get("device", "auto"), cmd.get("gpu_busy"), cmd.get("base"),
                        bool(cmd.get("allow_pickle")))
                if cmd.get("gguf"):
                    pg.load_gguf(cmd["gguf"])
            elif name == "load_gguf":
                pg.load_gguf(cmd.get("path"))
            elif name == "generate":
                pg.generate(cmd)
            elif name == "classify":
                pg.classify(cmd)
            elif name == "batch":
                pg.batch(cmd)
            else:
                emit("error", id=cmd.get("id"), message=f"unknown command {name!r}", hint=None)
        except LoratuiError as err:
            message = f"{err.field}: {err.message}" if err.field else err.message
            emit("error", id=cmd.get("id"), message=message, hint=err.hint)
        except Exception as err:  # noqa: BLE001 - one line to the app, the traceback to stderr (the log)
            import traceback

            traceback.print_exc()
            text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
            hint = None
            if "out of memory" in text.lower():
                hint = "a run may hold the GPU: load on the CPU, or pick a smaller model"
            emit("error", id=cmd.get("id"), message=f"{type(err).__name__}: {text}", hint=hint)


def main() -> int:
    from loratui.core.parent_watch import exit_with_parent

    # the app gone (SIGKILL, a lost terminal while SIGHUP is ignored, an exit that never closed us): end now, not
    # after the command in hand (a model loading while the hub lookup retries outlived the app by minutes)
    exit_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except Exception:
        pass
    return serve()


if __name__ == "__main__":
    raise SystemExit(main())
