"""GGUF export screen (from the merge wizard and Adapters): types, output, confirm before replacing, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fixtures import host_app, screen_text, wait_until
from loratui.ui.screens import merge_export as export_mod
from loratui.ui.screens.adapters import AdaptersScreen
from loratui.ui.screens.merge import MergeScreen
from loratui.ui.screens.merge_export import ExportScreen, default_export_output, export_command

FAKE = Path(__file__).resolve().parent / "fixtures" / "fake_export.py"


@pytest.fixture
def fake_export(monkeypatch, tmp_path):
    args_file = tmp_path / "export-args.json"
    monkeypatch.setenv("FAKE_EXPORT_ARGS", str(args_file))

    def command(source, output, types, force):
        return [sys.executable, str(FAKE), *export_command(source, output, types, force)[3:]]

    monkeypatch.setattr(export_mod, "export_command", command)
    return args_file


def test_command_and_default_output():
    assert export_command(Path("r/x/adapter"), Path("o"), ["q8_0", "q4_k_m"], True)[1:] == [
        "-m", "loratui", "export", "r/x/adapter", "o", "--gguf", "q8_0,q4_k_m", "--force", "--jsonl"]
    assert default_export_output(Path("runs/x/adapter")) == Path("runs/x/gguf")
    assert default_export_output(Path("runs/x/merged")) == Path("runs/x/gguf")
    assert default_export_output(Path("some/thing")) == Path("some/thing-gguf")


async def test_export_from_the_merge_wizard_shows_the_report(runs, fake_export):
    adapter = runs / "smollm2-demo" / "adapter"
    app = host_app(lambda: MergeScreen(adapter))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("f8")  # straight from the adapter (merged in memory); ctrl+e once out of the field
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ExportScreen) and screen.output == runs / "smollm2-demo" / "gguf"
        text = screen_text(app)
        assert "an adapter: merged in memory" in text and "q4_k_m" in text
        screen.query_one("#ex-t-f16").value = True
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: screen.phase == "done", what="export done")
        assert json.loads(fake_export.read_text()) == ["export", str(adapter), str(runs / "smollm2-demo" / "gguf"),
                                                       "--gguf", "f16,q8_0,q4_k_m", "--jsonl"]
        text = screen_text(app)
        assert "✔ exported" in text and "⚠ changes 2 of 5" in text and "3/5" in text
        rows = {line.split()[1]: line.split()[2:] for line in text.splitlines() if len(line.split()) > 3}
        # the merged model's own row and the exact answers, as loratui export prints them (a QA walk missed them)
        assert rows["merged"][:2] == ["150", "5/5"] and rows["q4_k_m"][4:6] == ["120", "4/5"], rows
        # whole at 80 columns: the commands from the export's folder (with full paths they were cut: a QA walk)
        assert "ollama create demo -f Modelfile" in text and "llama-cli -m " in text
        command = next(line for line in text.splitlines() if "llama-cli -m " in line)
        assert "…" not in command and command.rstrip().rstrip("│▌▐ ").endswith("-cnv"), command
        assert "ChatML" in text
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, MergeScreen)


async def test_a_taken_output_is_replaced_only_after_a_confirm(runs, fake_export):
    out = runs / "smollm2-demo" / "gguf"
    out.mkdir()
    (out / "old.gguf").write_text("x")
    app = host_app(lambda: ExportScreen(runs / "smollm2-demo" / "adapter"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert "is not empty: Export asks before replacing it" in screen_text(app)
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert "Replace gguf?" in screen_text(app)
        await pilot.press("escape")  # no
        await pilot.pause()
        assert screen.phase == "form" and not fake_export.exists()
        await pilot.press("ctrl+n")
        await pilot.pause()
        await pilot.press("y")
        await wait_until(pilot, lambda: screen.phase == "done", what="export done")
        assert "--force" in json.loads(fake_export.read_text())


async def test_a_failed_export_says_why(runs, fake_export, monkeypatch):
    monkeypatch.setenv("FAKE_EXPORT", "fail")
    app = host_app(lambda: ExportScreen(runs / "smollm2-demo" / "adapter"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: screen.phase == "failed", what="export failed")
        text = " ".join(screen_text(app).replace("┃", " ").split())
        assert "✖ export failed ADAPTER_OR_MODEL: a classifier (seq-cls) cannot be exported to GGUF" in text
        assert "use loratui merge for a standalone classifier" in text


async def test_adapters_lists_exported_files_with_sizes(runs):
    out = runs / "smollm2-demo" / "gguf"
    out.mkdir()
    (out / "model-q4_k_m.gguf").write_bytes(b"\0" * 3 * 2**20)
    app = host_app(lambda: AdaptersScreen(folders=[runs]))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="adapters listed")
        screen.select((runs / "smollm2-demo" / "adapter").resolve())
        await pilot.pause()
        if screen.selected is None or screen.selected.name != "smollm2-demo":
            keys = [a.name for a in screen.adapters]
            screen.query_one("DataTable").move_cursor(row=keys.index("smollm2-demo"))
            await pilot.pause()
        text = screen_text(app)
        assert "GGUF exports" in text and "gguf/model-q4_k_m.gguf" in text and "3.0 MiB" in text
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(app.screen, ExportScreen)


async def test_the_screen_offers_every_type_the_cli_takes(runs, fake_export, capsys):
    """A QA walk: the screen offered six types, not q4_0, which ``loratui export --gguf`` takes. One list now (core)."""
    from loratui.cli import main
    from loratui.core.export import GGUF_TYPES, parse_types

    with pytest.raises(SystemExit):
        main(["export", "--help"])
    cli_help = " ".join(capsys.readouterr().out.split())
    cli_types = parse_types(",".join(GGUF_TYPES))  # every name the CLI accepts
    app = host_app(lambda: ExportScreen(runs / "smollm2-demo" / "adapter"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        offered = [c.id.removeprefix("ex-t-") for c in screen.query("TypeChoice")]
        assert offered == cli_types and "q4_0" in offered
        assert all(kind in cli_help for kind in offered), cli_help
        line = next(ln for ln in screen_text(app).splitlines() if "Types" in ln)
        assert all(f" {kind}" in line for kind in offered), line  # all of them on one line at 80 columns
        screen.query_one("#ex-t-q8_0").value = screen.query_one("#ex-t-q4_k_m").value = False
        screen.query_one("#ex-t-q4_0").value = True
        await pilot.press("ctrl+n")
        await wait_until(pilot, lambda: screen.phase == "done", what="export done")
        assert json.loads(fake_export.read_text())[3:5] == ["--gguf", "q4_0"]


async def test_the_form_says_which_prompts_the_check_asks(runs, tmp_path):
    """QA: the screen claimed 'the run's held-out prompts' for a model that was then asked general ones."""
    from loratui.core import runs as runs_mod
    from loratui.core.config import RunConfig

    cfg = RunConfig.model_validate({"model": {"name": "smollm2-135m-instruct"},
                                    "data": {"source": "sample:contacts-json.jsonl", "validation_fraction": 0.1},
                                    "output": {"runs_dir": str(tmp_path / "r"), "name": "split"}})
    run = runs_mod.create_run(cfg)
    merged = run.path / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "loratui-merge.json").write_text(json.dumps({"adapter": str(run.adapter_dir)}))
    loose = tmp_path / "loose-model"
    loose.mkdir()
    (loose / "config.json").write_text("{}")
    app = host_app(lambda: ExportScreen(merged))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = " ".join(screen_text(app).split())
        assert "held-out 10% of sample:contacts-json.jsonl" in text
        app.screen.query_one("#ex-source").value = str(loose)
        await pilot.pause()
        text = " ".join(screen_text(app).split())
        assert "general prompts: no held-out set found for this model" in text and "held-out 10%" not in text
