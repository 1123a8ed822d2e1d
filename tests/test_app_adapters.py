"""Adapters screen: listing, details with file sizes from disk, delete with confirmation, copy path, add folder."""

from __future__ import annotations

import os

import pytest

from fixtures import host_app, screen_text, wait_until
from loratui.core.gpu import format_bytes
from loratui.ui.screens.adapters import AdaptersScreen
from loratui.ui.screens.merge import MergeScreen
from loratui.ui.widgets.modals import ConfirmModal, PromptModal


pytestmark = pytest.mark.usefixtures("utc")


def names(screen) -> list[str]:
    return [a.name for a in screen.adapters]


async def test_browse_and_file_sizes_match_disk(runs):
    app = host_app(lambda: AdaptersScreen(), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="adapters")
        assert sorted(names(screen)) == ["smollm2-demo", "smollm2-demo/checkpoint-100", "smollm2-demo/checkpoint-200",
                                         "smollm2-stopped", "smollm2-stopped/checkpoint-100"]
        for _ in range(len(screen.adapters)):
            a = screen.selected
            on_disk = {p.relative_to(a.path).as_posix(): os.path.getsize(p) for p in a.path.rglob("*") if p.is_file()}
            assert dict(a.files) == on_disk and a.size == sum(on_disk.values())
            await pilot.press("down")
        await pilot.press("home")
        await pilot.pause()
        text = screen_text(app)
        size = os.path.getsize(screen.selected.path / "adapter_model.safetensors")
        assert "adapter_model.safetensors" in text and format_bytes(size) in text
        assert "q_proj, v_proj" in text and "460,800" in text


async def test_delete_with_confirmation(runs):
    app = host_app(lambda: AdaptersScreen(select=runs / "smollm2-demo" / "checkpoints" / "checkpoint-100"),
                   runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="adapters")
        target = runs / "smollm2-demo" / "checkpoints" / "checkpoint-100"
        assert screen.selected.path == target
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        await pilot.press("n")
        await pilot.pause()
        assert target.is_dir()
        before = {p for p in runs.rglob("*")}
        await pilot.press("x")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="confirm")
        await pilot.press("y")
        await wait_until(pilot, lambda: "smollm2-demo/checkpoint-100" not in names(screen), what="refresh")
        after = {p for p in runs.rglob("*")}
        assert not target.exists()
        assert before - after == {p for p in before if p == target or target in p.parents}
        assert len(screen.adapters) == 4


async def test_copy_path(runs, monkeypatch):
    app = host_app(lambda: AdaptersScreen(select=runs / "smollm2-demo" / "adapter"), runs_dir=runs)
    copied = []
    monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="adapters")
        await pilot.press("y")
        await pilot.pause()
        assert copied == [str(runs / "smollm2-demo" / "adapter")]
        assert any(str(runs / "smollm2-demo" / "adapter") in str(n.message) for n in app._notifications)


async def test_add_folder(runs, tmp_path):
    from test_adapters import write_adapter

    write_adapter(tmp_path / "elsewhere" / "deep" / "my-adapter")
    app = host_app(lambda: AdaptersScreen(), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="adapters")
        await pilot.press("f")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptModal), what="prompt")
        await pilot.press(*"elsewhere")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "my-adapter" in names(screen), what="added folder searched")
        assert len(screen.adapters) == 6


async def test_merge_opens_wizard_prefilled(runs):
    app = host_app(lambda: AdaptersScreen(select=runs / "smollm2-demo" / "adapter"), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="adapters")
        await pilot.press("g")
        await wait_until(pilot, lambda: isinstance(app.screen, MergeScreen), what="merge")
        assert app.screen.adapter == runs / "smollm2-demo" / "adapter"
        assert app.screen.base == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_snapshot_adapters(runs, snap_compare):
    async def settle(pilot):
        await wait_until(pilot, lambda: pilot.app.screen.loaded, what="adapters")

    app = host_app(lambda: AdaptersScreen(select=runs / "smollm2-demo" / "adapter"), runs_dir=runs)
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


async def test_at_80_columns_the_footer_keeps_the_screen_keys_and_the_way_back_to_runs(runs):
    app = host_app(lambda: AdaptersScreen(), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.loaded, what="adapters")
        lines = screen_text(app).splitlines()
        footer = lines[-1]
        for key in ("t Try it", "g Merge", "e Export GGUF", "del Delete", "? Help", "q Quit", "r Runs"):
            assert key in footer, footer
        assert "f adds a folder" in lines[0]  # the rarer keys: the title line and help (?)


async def test_at_80_columns_checkpoints_are_named_whole_with_their_step_and_the_runs_losses_there(runs):
    """A walk at 80x24 read 'smollm2-135m…0012/chec…t-100'-like names and no step or loss: which checkpoint is which?
    Each run's checkpoints sit under its adapter, named whole, beside the step each holds, the train loss logged
    there and the evaluation at it: the figures the Monitor and the Runs list show for the same run."""
    import shutil

    from loratui.core.fmt import format_loss
    from loratui.core.runs import RunDir, summarize

    long = "smollm2-135m-instruct-lora-20260105-090012"  # the names the app gives runs
    shutil.move(runs / "smollm2-demo", runs / long)
    shutil.rmtree(runs / "smollm2-stopped" / "adapter")  # a run with checkpoints and no adapter (yet)
    app = host_app(lambda: AdaptersScreen(), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.loaded, what="adapters")
        rows = [line.split() for line in screen_text(app).splitlines()[1:6]]
    demo = summarize(RunDir(runs / long))
    assert rows[0][:4] == ["Adapter", "Step", "Loss", "Eval"]
    assert rows[1][:4] == ["smollm2-stopped/checkpoint-100", "100", "1.361", "1.462"]
    assert rows[2][:4] == [long, "200", format_loss(demo.loss), format_loss(demo.eval_loss)]  # the Monitor's
    assert rows[3][:5] == ["├", "checkpoint-200", "200", "0.948", "1.032"]
    assert rows[4][:5] == ["└", "checkpoint-100", "100", "1.361", "1.462"]  # recorded at step 100


async def test_at_80x24_the_detail_of_a_demo_run_with_exports_fits_without_a_scrollbar(runs):
    """The walk: at 80x24 the detail of an adapter with GGUF exports (seven target modules, the default run name)
    ran past its 10 rows: a scrollbar's end ('▂▂') stood among the text, and the date and targets were out of
    view. Every row shows, and nothing scrolls."""
    import json
    import shutil

    name = "smollm2-135m-instruct-lora-20261204-0912"
    shutil.copytree(runs / "smollm2-demo", runs / name)
    config = runs / name / "adapter" / "adapter_config.json"
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config.write_text(json.dumps({**json.loads(config.read_text()), "target_modules": targets}))
    (runs / name / "gguf").mkdir()
    for kind, size in (("f16", 500_000), ("q8_0", 300_000), ("q4_k_m", 150_000)):
        (runs / name / "gguf" / f"model-{kind}.gguf").write_bytes(b"\0" * size)
    app = host_app(lambda: AdaptersScreen(folders=[runs]), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="adapters")
        assert screen.selected.name == name  # the newest run's adapter, first
        await pilot.pause()
        rows = screen_text(app).splitlines()[-11:-1]  # the detail's 10 rows, above the footer
    text = "\n".join(rows)
    assert not any(ch in text for ch in "▁▂▃▄▅▆▇█"), text
    assert "created" in text and "v_proj" in text and "f16, q8_0, q4_k_m (l: try)" in text, text
    assert "adapter_model.safetensors" in text and "gguf/model-q4_k_m.gguf" in text, text


def test_a_loss_logged_before_the_adapter_s_step_says_its_step():
    """The table showed step 5's loss beside an adapter of step 8 as if it were step 8's (QA walk; the detail said
    'at step 5'): it reads as the Monitor's '0.160@5'; a loss logged at the adapter's own step stays bare."""
    from loratui.core.step_history import StepFigures
    from loratui.ui.widgets.adapter_rows import loss_cell

    assert loss_cell(StepFigures(step=8, loss=0.16, loss_step=5)) == "0.160@5"
    assert loss_cell(StepFigures(step=8, loss=0.16, loss_step=8)) == "0.160"
    assert loss_cell(StepFigures(step=8)) == loss_cell(None) == "-"
