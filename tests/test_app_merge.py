"""Merge wizard: steps, validation, the subprocess (a fake script printing the documented JSON lines)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fixtures import host_app, screen_text, wait_until
from loratui.ui.screens import merge as merge_mod
from loratui.ui.screens.merge import MergeScreen, default_output, merge_command

FAKE = Path(__file__).resolve().parent / "fixtures" / "fake_merge.py"


@pytest.fixture
def fake_merge(monkeypatch, tmp_path):
    args_file = tmp_path / "merge-args.json"
    monkeypatch.setenv("FAKE_MERGE_ARGS", str(args_file))

    def command(adapter, output, base, dtype):
        return [sys.executable, str(FAKE), *merge_command(adapter, output, base, dtype)[3:]]

    monkeypatch.setattr(merge_mod, "merge_command", command)
    return args_file


def test_merge_command_and_default_output():
    cmd = merge_command(Path("a/adapter"), Path("out"), "org/base", "fp16")
    assert cmd[1:] == ["-m", "loratui", "merge", "a/adapter", "out", "--base", "org/base", "--dtype", "fp16",
                       "--jsonl"]
    assert "--base" not in merge_command(Path("a"), Path("o"), None, "bf16")
    assert default_output(Path("runs/x/adapter")) == Path("runs/x/merged")
    # a checkpoint's merge goes beside checkpoints/: the trainer takes 'checkpoint-5-merged' there for a checkpoint
    assert default_output(Path("runs/x/checkpoints/checkpoint-5")) == Path("runs/x/merged-checkpoint-5")
    assert default_output(Path("elsewhere/my-lora")) == Path("elsewhere/my-lora-merged")
    from loratui.ui.screens.merge_export import default_export_output

    assert default_export_output(Path("runs/x/checkpoints/checkpoint-5")) == Path("runs/x/gguf-checkpoint-5")
    assert default_export_output(Path("runs/x/merged")) == Path("runs/x/gguf")


async def walk_to_confirm(pilot, *, dtype_presses: tuple[str, ...] = ()):
    screen = pilot.app.screen
    await pilot.press("ctrl+n")  # adapter -> base
    assert screen.step == 1
    await pilot.press("enter")  # base input submitted -> dtype
    assert screen.step == 2
    if dtype_presses:
        await pilot.press(*dtype_presses)
    await pilot.press("ctrl+n")  # dtype -> output
    assert screen.step == 3
    await pilot.press("enter")  # output -> confirm
    assert screen.step == 4


async def test_wizard_runs_the_merge_and_shows_the_summary(runs, fake_merge):
    adapter = runs / "smollm2-demo" / "adapter"
    app = host_app(lambda: MergeScreen(adapter))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert screen.base == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert screen.output == runs / "smollm2-demo" / "merged"
        # fp32: the third radio button
        await walk_to_confirm(pilot, dtype_presses=("down", "down", "enter"))
        assert screen.dtype == "fp32"
        assert "fp32" in screen_text(app) and "HuggingFaceTB/SmolLM2-135M-Instruct" in screen_text(app)
        await pilot.press("ctrl+n")  # merge
        await wait_until(pilot, lambda: screen.phase == "done", what="merge done")
        args = json.loads(fake_merge.read_text())
        assert args == ["merge", str(adapter), str(runs / "smollm2-demo" / "merged"), "--base",
                        "HuggingFaceTB/SmolLM2-135M-Instruct", "--dtype", "fp32", "--jsonl"]
        text = screen_text(app)
        out = runs / "smollm2-demo" / "merged"
        disk = sum(p.stat().st_size for p in out.iterdir())
        assert "✔ merged" in text and str(out) in text and "0.000488" in text and "12.3 s" in text
        assert "relative difference <0.01% (fp32 rounding allows up to 0.01%)" in " ".join(text.replace("█", " ").split())
        from loratui.core.gpu import format_bytes

        assert format_bytes(disk) in text
        assert "loading base" in screen.log_lines and "Loading checkpoint shards: 100%|##########| 1/1" in screen.log_lines


async def test_a_merge_whose_check_fails_is_saved_but_flagged(runs, fake_merge, monkeypatch):
    """QA: '✔ merged' above 'check ✖ merged model differs from the adapter more than expected'."""
    monkeypatch.setenv("FAKE_MERGE", "checkfail")
    app = host_app(lambda: MergeScreen(runs / "smollm2-demo" / "adapter"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        await walk_to_confirm(pilot)  # the default dtype
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: screen.phase in ("done", "failed"), what="merge ended")
        text = " ".join(screen_text(app).replace("█", " ").split())
        assert screen.phase == "done" and "✔ merged" not in text
        assert "⚠ merged, but the check failed" in text and "differs from the adapter more than expected" in text
        assert "merge again in fp32 or fp16" in text and "Playground" in text


async def test_failed_merge_shows_message_and_hint(runs, fake_merge, monkeypatch):
    monkeypatch.setenv("FAKE_MERGE", "fail")
    app = host_app(lambda: MergeScreen(runs / "smollm2-demo" / "adapter"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        await walk_to_confirm(pilot)
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: screen.phase == "failed", what="merge failed")
        text = screen_text(app)
        assert "✖ merge failed" in text and "HuggingFaceTB/Nope not found" in text
        assert "give a hub id or a local folder" in text
        await pilot.press("escape")  # back to the wizard to fix it
        await pilot.pause()
        assert screen.phase == "wizard"


async def test_crashed_merge_without_verdict(runs, fake_merge, monkeypatch):
    monkeypatch.setenv("FAKE_MERGE", "crash")
    app = host_app(lambda: MergeScreen(runs / "smollm2-demo" / "adapter"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        await walk_to_confirm(pilot)
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: screen.phase == "failed", what="merge failed")
        text = screen_text(app)
        assert "exited with code 3" in text and "something broke" in text and "Traceback" in text


async def test_validation(runs, fake_merge, tmp_path):
    (runs / "smollm2-demo" / "merged").mkdir()
    (runs / "smollm2-demo" / "merged" / "x").write_text("taken")
    app = host_app(lambda: MergeScreen())
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        await pilot.press("ctrl+n")
        assert screen.step == 0  # no adapter given
        await pilot.press(*"runs/smollm2-demo")  # a run, not an adapter folder
        await pilot.press("enter")
        assert screen.step == 0 and "holds no adapter_config.json" in screen_text(app)
        await pilot.press(*"/adapter")
        await pilot.pause()
        await pilot.press("enter")
        assert screen.step == 1 and screen.base == "HuggingFaceTB/SmolLM2-135M-Instruct"
        await pilot.press("enter", "ctrl+n")
        assert screen.step == 3
        await pilot.press("enter")
        assert screen.step == 3  # the default output exists and is not empty
        assert "exists and is not empty" in screen_text(app)


async def test_set_adapter_restarts_the_wizard(runs):
    app = host_app(lambda: MergeScreen())
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        screen.set_adapter(runs / "smollm2-stopped" / "adapter")
        await pilot.pause()
        assert screen.step == 0 and screen.base == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert screen.output == runs / "smollm2-stopped" / "merged"


def _merge_app(runs):
    return host_app(lambda: MergeScreen(runs / "smollm2-demo" / "adapter"))


def test_snapshot_merge_confirm(runs, snap_compare):
    async def to_confirm(pilot):
        await pilot.pause()
        await walk_to_confirm(pilot)
        await pilot.pause()

    assert snap_compare(_merge_app(runs), terminal_size=(80, 24), run_before=to_confirm)


def test_snapshot_merge_done(runs, fake_merge, snap_compare):
    async def merged(pilot):
        await pilot.pause()
        await walk_to_confirm(pilot)
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: pilot.app.screen.phase == "done", what="merge done")

    assert snap_compare(_merge_app(runs), terminal_size=(80, 24), run_before=merged)


async def test_the_wizards_paths_follow_the_runs_folder_the_app_was_opened_with(runs, tmp_path):
    """A walk with --runs-dir /tmp/uiwalk/runs read 'runs/<run>/adapter' in the empty Merge wizard: a folder the
    app was not looking at. The adapter and output fields (and the Export screen's) suggest the app's runs folder."""
    from textual.widgets import Input

    from loratui.ui.screens.merge_export import ExportScreen

    elsewhere = tmp_path / "elsewhere" / "runs"
    app = host_app(lambda: MergeScreen(), runs_dir=elsewhere)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#mg-adapter", Input).placeholder == f"{elsewhere}/<run>/adapter"
        assert app.screen.query_one("#mg-output", Input).placeholder == f"{elsewhere}/<run>/merged"
        app.push_screen(ExportScreen(None))
        await pilot.pause()
        assert app.screen.query_one("#ex-source", Input).placeholder.startswith(f"{elsewhere}/<run>/adapter")
        assert app.screen.query_one("#ex-output", Input).placeholder == f"{elsewhere}/<run>/gguf"
