"""Playground screen with a stand-in generation process (tests/fixtures/fake_playground.py): answers side by side,
streamed; classification; a batch with its metric; "try it" from Adapters."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from fixtures import host_app, screen_text, wait_until
from loratui.core import playground as playground_core
from loratui.ui.screens.playground import PlaygroundScreen

FAKE = [sys.executable, str(Path(__file__).resolve().parent / "fixtures" / "fake_playground.py")]
PROMPT = "Extract the contact as JSON: Hi, this is Ana Ruiz from Lyon, write to ana@example.org"


def playground_app(runs: Path):
    return host_app(lambda: PlaygroundScreen(runs / "smollm2-demo" / "adapter", worker_command=FAKE), runs_dir=runs)


async def generate(pilot, screen: PlaygroundScreen, prompt: str = PROMPT) -> None:
    screen.query_one("#pg-prompt").text = prompt
    await pilot.press("ctrl+g")
    await wait_until(pilot, lambda: not screen.busy, what="answers")


async def test_answers_stream_side_by_side(runs):
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        text = screen_text(app)
        assert "RAM 850 MiB (+540 MiB)" in text  # after loading, and what loading took
        await generate(pilot, screen)
        tokens = [e for e in screen.events if e["kind"] == "token"]
        assert len(tokens) == 11  # streamed piece by piece
        assert screen.answers["adapter"].text == '{"name": "Ana Ruiz", "city": "Lyon", "email": "ana@example.org"}'
        assert screen.answers["base"].text.startswith("Sure! Here is the contact")
        text = screen_text(app)
        assert "base: SmolLM2-135M-Instruct" in text and "36.0 tok/s" in text


async def test_generation_settings_reach_the_process(runs, monkeypatch):
    sent = []
    real_send = playground_core.PlaygroundClient.send

    def spy(self, cmd, **data):
        sent.append((cmd, data))
        return real_send(self, cmd, **data)

    monkeypatch.setattr(playground_core.PlaygroundClient, "send", spy)
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        screen.query_one("#pg-max-new").value = "12"
        screen.query_one("#pg-temperature").value = "0.3"
        screen.query_one("#pg-greedy").value = False
        await generate(pilot, screen)
    cmd, data = sent[-1]
    assert cmd == "generate" and data["max_new_tokens"] == 12 and data["temperature"] == 0.3
    assert data["greedy"] is False and data["chat_template"] is True and data["sides"] == ["adapter", "base"]
    assert sent[0][0] == "load" and sent[0][1]["model"].endswith("smollm2-demo/adapter")


async def test_batch_shows_the_metric_and_differences_first(runs):
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert app.screen.query_one("#prompt-input").value == "sample:contacts-json-eval.jsonl"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.batch_result is not None, what="batch")
        text = screen_text(app)
        assert "base: exact 1/3, valid JSON 1/3" in text and "adapter: exact 2/3, valid JSON 3/3" in text
        assert "1 where only one of base and adapter is right" in text  # (it said "differ": read as the answers)
        table = screen.query_one("#pg-batch-table")
        assert str(table.get_row_at(0)[0]) == "1"  # the example where they differ comes first
        assert [str(table.get_row_at(i)[0]) for i in range(3)] == ["1", "2", "3"]


async def test_the_batch_dialog_offers_the_runs_held_out_split(runs, monkeypatch):
    """A run trained with data.validation_fraction (no validation file): ctrl+b offered an empty file box only; the
    rows it never trained on were not offered. Now the dialog names them first, and picking them asks the process
    for them (held_out); a file stays one choice away."""
    sent = []
    real_send = playground_core.PlaygroundClient.send
    monkeypatch.setattr(playground_core.PlaygroundClient, "send",
                        lambda self, cmd, **data: sent.append((cmd, data)) or real_send(self, cmd, **data))
    monkeypatch.setenv("FAKE_PLAYGROUND_HELD_OUT", "80")
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        assert "ctrl+b runs the held-out rows" in screen_text(app)
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: app.screen is not screen, what="batch dialog")
        text = screen_text(app)
        assert "the run's held-out 10%: 80 rows" in text and "a file (.jsonl/.csv)" in text, text
        await pilot.press("down", "enter")  # a file instead: the file box, empty (the run has no file)
        await wait_until(pilot, lambda: app.screen.query("#prompt-input"), what="file box")
        assert app.screen.query_one("#prompt-input").value == ""
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="dialog closed")
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: app.screen is not screen, what="batch dialog")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.batch_result is not None, what="batch")
        assert "batch of 3 from the run's held-out 10%" in screen_text(app)
    batch = [data for cmd, data in sent if cmd == "batch"]
    assert len(batch) == 1 and batch[0]["held_out"] is True and "file" not in batch[0]


async def test_an_empty_or_zero_n_is_refused_with_a_line_naming_the_field(runs, monkeypatch):
    """A QA walk: N left empty quietly ran 20 examples (and 0 ran 1). As Setup's fields do, the box is named, with
    what it wants and its default, the file is not asked for and nothing is sent; the same for max tokens, and for
    temp and top-p where the answers are sampled (greedy does not read them)."""
    sent = []
    real_send = playground_core.PlaygroundClient.send
    monkeypatch.setattr(playground_core.PlaygroundClient, "send",
                        lambda self, cmd, **data: sent.append(cmd) or real_send(self, cmd, **data))
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        box = screen.query_one("#pg-batch-n")
        for typed, said in (("", "N is empty: how many examples a batch runs (the default is 20)"),
                            ("0", "N must be at least 1, got '0' (the default is 20)")):
            box.value = typed
            app.clear_notifications()
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert app.screen is screen and screen.focused is box  # no file asked for: N to type in
            assert [n.message for n in app._notifications] == [said]
        assert "batch" not in sent
        screen.query_one("#pg-prompt").text = PROMPT
        for greedy, boxes, said in (
                (True, {"#pg-max-new": "", "#pg-temperature": ""},
                 "max tokens is empty: how many tokens an answer may have (the default is 64)"),
                (False, {"#pg-max-new": "64"}, "temp is empty: the sampling temperature (the default is 0.7)"),
                (False, {"#pg-temperature": "0.7", "#pg-top-p": "1.5"},
                 "top-p must be more than 0 and at most 1, got '1.5' (the default is 0.9)")):
            for box_id, typed in boxes.items():
                screen.query_one(box_id).value = typed
            screen.query_one("#pg-greedy").value = greedy
            app.clear_notifications()
            await pilot.press("ctrl+g")
            await pilot.pause()
            assert [n.message for n in app._notifications] == [said] and not screen.busy
        assert "generate" not in sent
        screen.query_one("#pg-temperature").value = ""
        screen.query_one("#pg-greedy").value = True
        await generate(pilot, screen)  # greedy: an empty temp and a wrong top-p are not read
        assert sent[-1] == "generate" and screen.answers["adapter"].text


async def test_classifier_shows_labels_with_probabilities(runs, monkeypatch):
    monkeypatch.setenv("FAKE_PLAYGROUND_TASK", "seq-cls")
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        assert screen.has_class("-cls")  # no generation settings for a classifier
        await generate(pilot, screen, "Honestly, this blender was not bad at all.")
        text = screen_text(app)
        assert "positive" in text and "91.0%" in text and "the base model's head is untrained" in text


async def _press_on_the_demo_adapter(pilot, app, runs, key: str) -> None:
    """Adapters, the demo's adapter highlighted, then ``key`` (t: try it; l: beside a GGUF export)."""
    await pilot.press("a")
    await wait_until(pilot, lambda: getattr(app.screen, "loaded", False), what="adapters")
    app.screen.select(runs / "smollm2-demo" / "adapter")
    await pilot.pause()
    await pilot.press(key)


async def test_try_it_from_adapters(runs, monkeypatch):
    from loratui.ui.app import LoratuiApp

    monkeypatch.setattr(playground_core, "worker_command", lambda: FAKE)
    app = LoratuiApp(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _press_on_the_demo_adapter(pilot, app, runs, "t")
        await wait_until(pilot, lambda: isinstance(app.screen, PlaygroundScreen) and app.screen.info, what="playground")
        assert app.screen.info["model"].endswith("smollm2-demo/adapter")


async def test_t_on_a_finished_run_s_monitor_tries_its_adapter(runs, monkeypatch):
    """t from the Monitor of a finished run opened an empty Playground ('pick an adapter or a model', a QA walk)."""
    from loratui.ui.app import LoratuiApp

    monkeypatch.setattr(playground_core, "worker_command", lambda: FAKE)
    app = LoratuiApp(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.open_monitor(runs / "smollm2-demo")
        await wait_until(pilot, lambda: app.current_mode == "monitor" and app.screen.state == "finished",
                         what="monitor")
        await pilot.press("t")
        await wait_until(pilot, lambda: isinstance(app.screen, PlaygroundScreen) and app.screen.info, what="playground")
        assert app.screen.info["model"].endswith("smollm2-demo/adapter")
        app.switch_mode("monitor")
        await pilot.pause()
        await pilot.press("t")  # again: the same adapter is not loaded a second time
        await pilot.pause()
        assert isinstance(app.screen, PlaygroundScreen) and not app.screen.busy


def test_snapshot_playground(runs, snap_compare):
    async def settle(pilot):
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        await generate(pilot, screen)
        screen.set_focus(None)  # no blinking cursor in the picture
        await pilot.pause()

    assert snap_compare(playground_app(runs), terminal_size=(80, 24), run_before=settle)


def test_snapshot_playground_batch(runs, snap_compare):
    async def settle(pilot):
        screen = pilot.app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        await pilot.press("ctrl+b")
        await pilot.pause()
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.batch_result is not None, what="batch")
        screen.set_focus(None)
        await pilot.pause()

    assert snap_compare(playground_app(runs), terminal_size=(80, 24), run_before=settle)


async def test_a_batch_shows_its_progress_tally_and_eta_as_it_goes(runs, monkeypatch):
    """Issue 19 item 17: '0 examples' for a minute, the results after ten. Now k/N, a running tally and an ETA."""
    monkeypatch.setenv("FAKE_PLAYGROUND_ITEM_S", "0.6")
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        screen.query_one("#pg-batch-n").value = "3"
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: app.screen is not screen, what="file dialog")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is screen, what="batch started")
        assert "batch 0/3 · first example…" in screen_text(app)
        await wait_until(pilot, lambda: len(screen.batch_items) == 1, what="one example")
        line = next(ln for ln in screen_text(app).splitlines() if "batch 1/3" in ln)
        assert re.search(r"adapter 1/1 right · base 0/1 right · ETA 0:\d\d", line), line  # two to go
        await wait_until(pilot, lambda: screen.batch_result is not None, what="batch done")
        assert "adapter: exact 2/3" in screen_text(app)


def gguf_export(runs: Path) -> Path:
    out = runs / "smollm2-demo" / "gguf"
    out.mkdir(exist_ok=True)
    (out / "model-q8_0.gguf").write_bytes(b"GGUF" + b"\0" * 2**20)
    return out / "model-q8_0.gguf"


async def open_gguf_picker(pilot, app, screen) -> None:
    """ctrl+l in the Playground (its model loaded first): the GGUF picker opens over it."""
    await wait_until(pilot, lambda: screen.info, what="loaded")
    await pilot.press("ctrl+l")
    await wait_until(pilot, lambda: app.screen is not screen, what="GGUF picker")


async def test_a_gguf_export_takes_the_base_models_place(runs):
    """Issue 17: the adapter beside its GGUF export, to see what quantization cost; the batch scores it too."""
    gguf_export(runs)
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await open_gguf_picker(pilot, app, screen)
        assert "gguf/model-q8_0.gguf  ·  1.0 MiB" in screen_text(app)  # the adapter's own exports first
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.gguf and not screen.busy, what="GGUF loaded")
        assert "model-q8_0.gguf (Q8_0, 1.0 MiB) beside the adapter" in screen_text(app)
        await generate(pilot, screen)
        assert not screen.query_one("#pg-pane-base").display and screen.query_one("#pg-pane-gguf").display
        text = screen_text(app)
        assert "GGUF model-q8_0.gguf" in text and "≠ adapter" in text
        assert screen.answers["gguf"].text.endswith('"ana@example.com"}') and not screen.answers["base"].text
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: app.screen is not screen, what="file dialog")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.batch_result is not None, what="batch")
        text = screen_text(app)
        assert "gguf: exact 1/3, valid JSON 3/3, same as adapter 2/3" in text
        assert "1 where the GGUF answers unlike the adapter" in text
        table = screen.query_one("#pg-batch-table")
        assert [str(c.label) for c in table.columns.values()][1] == "gguf"
        assert str(table.get_row_at(0)[0]) == "1"  # the answer the GGUF changed comes first
        await pilot.press("ctrl+l")  # and back to the base model
        await wait_until(pilot, lambda: app.screen is not screen, what="GGUF picker")
        app.screen.query_one("OptionList").highlighted = 2
        await pilot.press("enter")
        await wait_until(pilot, lambda: not screen.gguf and not screen.busy, what="GGUF dropped")
        assert screen.sides == ["adapter", "base"] and screen.query_one("#pg-pane-base").display


async def test_a_missing_gguf_is_one_line_and_the_base_model_stays(runs, tmp_path):
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await open_gguf_picker(pilot, app, screen)
        await pilot.press("enter")  # no export yet: the first choice types a path
        await wait_until(pilot, lambda: app.screen.query("#prompt-input"), what="path prompt")
        app.screen.query_one("#prompt-input").value = "runs/nope/model-q8_0.gguf"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.status.startswith("✖"), what="the error")
        assert "✖ gguf: no such file runs/nope/model-q8_0.gguf" in screen_text(app)
        assert not screen.gguf and not screen.busy and screen.sides == ["adapter", "base"]


async def test_try_gguf_from_adapters(runs, monkeypatch):
    from loratui.ui.app import LoratuiApp

    gguf = gguf_export(runs)
    monkeypatch.setattr(playground_core, "worker_command", lambda: FAKE)
    app = LoratuiApp(runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await _press_on_the_demo_adapter(pilot, app, runs, "l")
        await wait_until(pilot, lambda: isinstance(app.screen, PlaygroundScreen) and app.screen.gguf,
                         what="playground with the GGUF")
        assert app.screen.info["model"].endswith("smollm2-demo/adapter")
        assert app.screen.gguf["name"] == gguf.name and app.screen.sides == ["adapter", "gguf"]


async def test_the_model_picker_lists_merged_models(runs):
    """Merge writes runs/<run>/merged; the Playground's picker listed adapters and trained models only (a QA walk)."""
    from loratui.ui.widgets.choice_modal import ChoiceModal

    merged = runs / "smollm2-demo" / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        screen.action_pick_model()
        await wait_until(pilot, lambda: isinstance(app.screen, ChoiceModal), what="picker")
        assert (str(merged), "smollm2-demo  ·  merged") in app.screen.choices


async def _switch_model(pilot, app, screen, path: str) -> None:
    """ctrl+o, 'type a path', ``path``: the picker loads another model in place of the one on screen."""
    from loratui.ui.widgets.choice_modal import ChoiceModal

    await pilot.press("ctrl+o")
    await wait_until(pilot, lambda: isinstance(app.screen, ChoiceModal), what="model picker")
    options = app.screen.query_one("OptionList")
    options.highlighted = options.option_count - 1  # type a path, an alias or a hub id
    await pilot.press("enter")
    await wait_until(pilot, lambda: app.screen.query("#prompt-input"), what="path prompt")
    app.screen.query_one("#prompt-input").value = path
    await pilot.press("enter")
    await wait_until(pilot, lambda: app.screen is screen and screen.info.get("model") == path, what="switched")


async def test_switching_to_a_classifier_clears_the_previous_models_batch(runs):
    """A QA walk: a batch of the SmolLM2 adapter's answers stayed on screen beside a MiniLM classifier picked after it."""
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        await generate(pilot, screen)
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: app.screen is not screen, what="file dialog")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.batch_result is not None, what="batch")
        assert "adapter: exact 2/3" in screen_text(app)
        await _switch_model(pilot, app, screen, "runs/minilm-sentiment/adapter")
        assert screen.info["task"] == "seq-cls" and screen.has_class("-cls")
        assert screen.query_one("#pg-batch-table").row_count == 0
        text = screen_text(app)
        assert "exact 2/3" not in text and '"name"' not in text and "tok/s" not in text, text
        await pilot.press("ctrl+t")  # the batch view too: nothing from the SmolLM2 adapter
        await pilot.pause()
        text = screen_text(app)
        assert "exact" not in text and '"name"' not in text and "no batch for this model yet" in text, text


async def test_a_batch_cut_short_by_another_model_leaves_nothing_behind(runs, monkeypatch):
    """Examples of a batch still coming when another model is picked belong to the old model: dropped."""
    monkeypatch.setenv("FAKE_PLAYGROUND_ITEM_S", "0.3")
    app = playground_app(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.info, what="loaded")
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: app.screen is not screen, what="file dialog")
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(screen.batch_items) == 1, what="one example")
        await _switch_model(pilot, app, screen, "runs/minilm-sentiment/adapter")
        await wait_until(pilot, lambda: not screen.busy, what="the classifier ready")
        assert screen.batch_items == [] and screen.batch_result is None
        assert screen.query_one("#pg-batch-table").row_count == 0
        assert "batch" not in screen.status and "classify a text" in screen.status, screen.status
