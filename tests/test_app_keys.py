"""Keys typed the way the issue-9 user typed them: stray letters never start, resume or stop work, and no key is
lost (defects 1 and 9)."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from fixtures import wait_until
from loratui.ui.app import LoratuiApp
from loratui.ui.screens import runs as runs_mod
from loratui.ui.screens.merge import MergeScreen
from loratui.ui.screens.setup import SetupScreen
from loratui.ui.widgets.modals import ConfirmModal

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc")


async def test_typing_a_path_in_the_merge_wizard_after_tab_runs_no_hotkeys(runs, monkeypatch):
    """Defect 1 as it happened: in the Merge wizard, Tab moved focus off the path box and the path typed next ran
    hotkeys (r opened Runs, u resumed a stopped run, s opened Setup, p a data preview)."""
    launched = []
    monkeypatch.setattr(runs_mod, "launch_detached", lambda run, **kw: launched.append(run) or 4242)
    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("r")  # visit Runs first, the cursor on the stopped run, so that 'u' would resume it
        await wait_until(pilot, lambda: app.current_mode == "runs" and app.screen.loaded, what="runs")
        while app.screen.selected.state != "stopped":
            await pilot.press("down")
        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(app.screen, MergeScreen), what="merge wizard")
        await pilot.press("tab")
        assert not isinstance(app.focused, Input)  # focus left the path box
        await pilot.press(*"runs/smollm2-stopped/adapter", "q")
        await pilot.pause()
        assert app.current_mode == "merge" and isinstance(app.screen, MergeScreen)
        assert launched == [] and app.is_running
        await pilot.press("f4")  # the function keys still switch screens
        await wait_until(pilot, lambda: app.current_mode == "runs", what="runs via f4")
        await pilot.press("u")  # a resume asks first
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        await pilot.press("n")
        await pilot.pause()
        assert launched == []


async def test_setup_letters_go_nowhere_while_a_choice_field_has_focus(fake_core):
    """Tab onto a Select (no text box to catch letters): 'm', 'r', 'q' must not switch screens or quit."""
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.field("model.task").control.focus()
        await pilot.press("m", "r", "q", "g")
        await pilot.pause()
        assert app.current_mode == "setup" and app.is_running
        await pilot.press("escape")  # leave the field: letters are keys again
        await pilot.press("r")
        await wait_until(pilot, lambda: app.current_mode == "runs", what="runs")


async def test_keys_typed_in_one_burst_after_tab_reach_the_field(fake_core):
    """Defect 9 as tmux showed it: `send-keys Tab x y` right after the first frame (the form still mounting) left
    the field unchanged. The letters were sent to a widget before the Tab's binding had moved the focus, and the
    Tab itself jumped into a section whose widgets had no position yet."""
    from textual import events

    def burst(*keys: tuple[str, str | None]) -> None:
        """Keys queued together, as one terminal read delivers them (pilot.press waits after each key)."""
        for key, char in keys:
            event = events.Key(key, char)
            event.set_sender(app)
            app.post_message(event)

    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        burst(("tab", "\t"), ("x", "x"), ("y", "y"))
        await pilot.pause()
        assert isinstance(app.focused, Input) and app.focused.id == "f-model-name"
        assert app.focused.value == "smollm2-135m-instructxy"
        await settle(pilot)
        await pilot.press("tab", "shift+tab")  # once mounted, tab order is the form's order
        assert app.focused.id == "f-model-name"


async def test_first_keys_after_the_first_frame_are_kept(fake_core):
    """Defect 9: the first key after the first frame was ignored, and 'BSpace 4' in a number field left '8'."""
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        # no settling: the rest of the form is still being mounted
        await pilot.press("tab")
        assert isinstance(app.focused, Input) and app.focused.id == "f-model-name"
        await pilot.press("end", "backspace", "backspace", *"xy")
        assert app.focused.value == "smollm2-135m-instruxy"
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, SetupScreen) and screen.form_ready
        rank = screen.field("lora.r").control
        rank.focus()
        await pilot.press("end", "backspace", "4")
        assert rank.value == "4"
        await settle(pilot)  # the estimate that follows does not put the old value back
        assert rank.value == "4" and screen.values["lora"]["r"] == 4


# -- defect 8: names cut at 80 columns ------------------------------------------------------------------------------


LONG = ["minilm-l6-v2-lora-r4-20261125-1432", "minilm-l6-v2-lora-r16-20261125-1501",
        "minilm-l6-v2-lora-r16-20261125-1533"]


def _long_named_runs(runs):
    import shutil

    for name in LONG:
        shutil.copytree(runs / "smollm2-demo", runs / name)
        shutil.copytree(runs / "smollm2-demo" / "adapter", runs / f"smollm2-135m-instruct-lora-{name[-13:]}")


async def test_runs_and_adapters_show_the_distinguishing_tail_and_follow_the_width(runs, quiet_monitor):
    from fixtures import screen_text

    _long_named_runs(runs)
    app = LoratuiApp(runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("r")
        await wait_until(pilot, lambda: app.current_mode == "runs" and len(app.screen.summaries) == 6, what="runs")
        await pilot.pause()
        text = screen_text(app)
        for name in LONG:
            assert name[-4:] in text, text  # 1432 / 1501 / 1533: the part that tells them apart
        header = text.splitlines()[1]
        assert "Started" in header  # the last column is not cut
        await pilot.resize_terminal(120, 40)
        await wait_until(pilot, lambda: all(name in screen_text(app) for name in LONG), what="full names at 120")
        await pilot.press("a")
        await wait_until(pilot, lambda: app.current_mode == "adapters" and app.screen.loaded, what="adapters")
        await pilot.pause()
        text = screen_text(app)
        for name in LONG:
            assert f"smollm2-135m-instruct-lora-{name[-13:]}" in text
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        text = screen_text(app)
        for name in LONG:
            assert name[-4:] in text


# -- defect 12: the log pane follows progress bars; train and eval legends differ ----------------------------------


def test_log_pane_shows_the_newest_state_of_a_progress_line():
    from loratui.ui.widgets.log_tail import shown_line

    assert shown_line("Map:   0%|          | 0/80\rMap:  50%|#####     | 40/80\rMap: 100%|##########| 80/80\r") \
        == "Map: 100%|##########| 80/80"
    assert shown_line("step 20 loss 1.23") == "step 20 loss 1.23"


async def test_monitor_legend_tells_train_from_eval_without_colour(runs, quiet_monitor):
    from fixtures import host_app, screen_text
    from loratui.ui.screens.monitor import MonitorScreen

    app = host_app(lambda: MonitorScreen(runs / "smollm2-demo"))
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.screen.state == "finished", what="finished")
        await pilot.pause()
        import re

        markers = {}
        for line in screen_text(app).splitlines():
            for m in re.finditer(r" (\S+) (train|eval)\b", line):  # the chart's legend: marker, then label
                markers[m.group(2)] = m.group(1)
        assert markers["eval"] == "●" and "●" not in markers["train"], markers


async def test_a_preview_that_finishes_after_leaving_setup_does_not_cover_the_next_screen(fake_core, monkeypatch):
    """Defect 1's last step: 'p' started a data preview and it opened over the Monitor the user had gone to."""
    import threading

    from loratui.ui.widgets import setup_core
    from loratui.ui.widgets.setup_modals import PreviewModal

    release = threading.Event()

    def slow_preview(cfg, n=3):
        release.wait(10)
        return []

    monkeypatch.setattr(setup_core, "preview", slow_preview)
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await pilot.press("r")
        await wait_until(pilot, lambda: app.current_mode == "runs", what="runs")
        release.set()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.current_mode == "runs" and not isinstance(app.screen, PreviewModal)


# -- issue 19 item 2: function keys inside the Playground's prompt -------------------------------------------------


async def test_function_keys_leave_the_playground_prompt_without_touching_it(runs, quiet_monitor):
    """TextArea binds F6 (select the line) and F7 (select all): they selected the prompt instead of switching
    screens, and the next letter typed replaced it. Every function key now switches (or opens Help) and the prompt
    comes back as it was, the cursor where it was."""
    from textual.widgets import TextArea

    from loratui.ui.screens.help import HelpScreen

    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("t")
        await wait_until(pilot, lambda: app.current_mode == "playground", what="playground")
        prompt = app.screen.query_one("#pg-prompt", TextArea)
        await wait_until(pilot, lambda: app.focused is prompt, what="prompt focused")
        await pilot.press(*"two words")
        for key, mode in (("f6", "adapters"), ("f7", "merge"), ("f2", "setup"), ("f3", "monitor"),
                          ("f4", "runs"), ("f10", "compare")):
            await pilot.press(key)
            await wait_until(pilot, lambda: app.current_mode == mode, what=f"{mode} via {key}")
            await pilot.press("f9")
            await wait_until(pilot, lambda: app.current_mode == "playground", what="back via f9")
            assert prompt.text == "two words" and prompt.selected_text == "", key
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="help via f1")
        await pilot.press("f1")  # and F1 closes it again
        await wait_until(pilot, lambda: app.current_mode == "playground" and not isinstance(app.screen, HelpScreen),
                         what="help closed")
        prompt.focus()
        await pilot.press(*"!?")  # '?' is a character here, not Help
        assert prompt.text == "two words!?" and not isinstance(app.screen, HelpScreen)


async def test_escape_leaves_the_merge_wizard_s_field_and_letters_switch_screens_again(runs):
    """A walk at 80x24: in Merge, t, v, w went into the adapter box and Esc did not free them ('tvwt'). Esc on
    the first step leaves the field (the path typed so far stays), and r then opens Runs."""
    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(app.screen, MergeScreen) and isinstance(app.focused, Input),
                         what="merge wizard, its path box focused")
        box = app.focused
        await pilot.press("t", "v")
        assert box.value.endswith("tv") and app.current_mode == "merge"
        await pilot.press("escape")
        assert app.focused is None and box.value.endswith("tv")
        await pilot.press("r")
        await wait_until(pilot, lambda: app.current_mode == "runs", what="runs")


async def test_t_opens_the_playground_from_compare_too(runs):
    """Compare's next chart is n (it was t, which hid the app's Playground key there: a walk at 80x24)."""
    app = LoratuiApp(pinned_config(), runs_dir=str(runs))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("v")
        await wait_until(pilot, lambda: app.current_mode == "compare" and app.screen.loaded, what="compare")
        await pilot.press("t")
        await wait_until(pilot, lambda: app.current_mode == "playground", what="the playground")
