"""Nothing a user needs is cut at 80 or 60 columns (issue 19 item 12): Setup's Targets, the Open dialog's
descriptions, a confirmation's title, and at 60x20 Setup's values beside the side panel."""

from __future__ import annotations

import pytest
from textual.app import App

from fixtures import screen_text, wait_until
from loratui.ui.app import LoratuiApp
from loratui.ui.widgets.modals import ConfirmModal

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc")

LLAMA_ALL = "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_setup_shows_every_target_module(fake_core, size):
    cfg = pinned_config()
    cfg.lora.preset, cfg.lora.target_modules = "llama-all", None
    app = LoratuiApp(cfg)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        app.screen.field("lora.target_modules").control.focus()
        await settle(pilot)
        rows = [ln.split("▏")[0] for ln in screen_text(app).splitlines()]  # the form's side of each row
        start = next(i for i, ln in enumerate(rows) if "7 modules:" in ln)
        note = " ".join(" ".join(rows[start:start + 8]).split())
        assert f"7 modules: {LLAMA_ALL}" in note, note


async def test_at_60_columns_setup_values_keep_room_beside_the_panel(fake_core):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(60, 20)) as pilot:
        await settle(pilot)
        row = next(ln for ln in screen_text(app).splitlines() if ln.lstrip().startswith("Base model"))
        assert "smollm2-135m-in" in row, row  # 15 characters of the value, not 6
        assert "Memory estimate" in screen_text(app)  # the panel is still there


async def test_the_open_dialog_describes_each_config_in_whole_words(fake_core):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await settle(pilot)
        inside = [ln.split("▊", 1)[1].split("▎")[0] for ln in screen_text(app).splitlines() if "▊" in ln]
        text = " ".join(" ".join(inside).split())
        assert "LoRA r=8 alpha=32 on c_attn and c_proj (Conv1D layers)." in text, text


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_a_confirmation_title_and_its_keys_read_whole(size):
    name = "smollm2-135m-instruct-lora-20261204-0912/checkpoint-30"

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(ConfirmModal(f"Delete the checkpoint {name}?", "Removes it.", yes="Delete"))

    app = Host()
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="dialog")
        text = "".join("".join(ln.strip(" █").split()) for ln in screen_text(app).splitlines())
        assert f"Deletethecheckpoint{name}?" in text, text
        assert "Cancel[n]" in text and "Delete[y]" in text  # the keys, not swallowed as markup


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_the_playground_title_keeps_its_memory_figure(runs, size):
    """A long run name pushed the memory figure off the title: the path gives way (cut in its middle)."""
    import shutil
    import sys
    from pathlib import Path

    from fixtures import host_app
    from loratui.ui.screens.playground import PlaygroundScreen

    fake = [sys.executable, str(Path(__file__).resolve().parent / "fixtures" / "fake_playground.py")]
    name = "smollm2-135m-instruct-lora-20261204-0912"
    shutil.copytree(runs / "smollm2-demo", runs / name)
    app = host_app(lambda: PlaygroundScreen(runs / name / "adapter", worker_command=fake), runs_dir=runs)
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.screen.info, what="loaded")
        title = screen_text(app).splitlines()[0]
        assert title.rstrip().endswith("RAM 850 MiB (+540 MiB)"), title  # the memory figure, whole
        assert "cpu float32" in title, title
        if size[0] >= 80:
            assert "0912/adapter" in title, title  # the end of the run's name, what tells it from the others


async def test_setup_says_which_of_two_fields_is_in_force(fake_core, tmp_path):
    """Issue 19 item 18: 'Epochs 3' beside 'Max steps 80', 'Val. fraction 0.1' beside a validation file."""
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        epochs = setup.field("train.epochs")
        epochs.control.focus()
        await settle(pilot)
        lines = screen_text(app).splitlines()
        row = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("Epochs"))
        assert "not used: Max steps is set" in lines[row + 1]
        fraction = setup.field("data.validation_fraction")
        assert not fraction.has_class("-unused")
        setup.field("data.validation_file").control.value = str(tmp_path / "val.jsonl")
        setup.field("train.max_steps").control.value = ""
        await settle(pilot)
        assert fraction.has_class("-unused") and not epochs.has_class("-unused")
        fraction.control.focus()
        await settle(pilot)
        assert "not used: Validation file set" in screen_text(app)


async def test_the_first_estimate_says_it_is_working_and_for_how_long(fake_core, monkeypatch):
    """Issue 19 item 18: 9-15 s with only 'estimating...' on screen."""
    import threading

    from loratui.ui.widgets import setup_core

    release = threading.Event()
    fast = setup_core.estimate_memory
    monkeypatch.setattr(setup_core, "estimate_memory", lambda cfg: release.wait(20) and fast(cfg))
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: "estimating... 2 s" in screen_text(app), timeout=15, what="a ticking count")
        text = " ".join(" ".join(ln.split("▏")[-1].split()) for ln in screen_text(app).splitlines())
        assert "the first one reads the model and samples the data" in text, text
        release.set()
        await settle(pilot)
        assert "estimating" not in screen_text(app) and "this (lora)" in screen_text(app)


@pytest.mark.parametrize("size", [(80, 24), (120, 30)])
async def test_runs_keep_the_end_of_a_default_name_whole(runs, size):
    """Default names differ only in their date and time ('smol…04-235628' at 80 columns, a QA walk): the Model
    column gives way while names would be cut (the detail names the model), and a name is cut before a whole
    part, so its date and time read whole."""
    import shutil

    from fixtures import host_app
    from loratui.ui.screens.runs import RunsScreen

    for stamp in ("20261204-235628", "20261205-002333"):
        shutil.copytree(runs / "smollm2-demo", runs / f"smollm2-135m-instruct-lora-{stamp}")
    app = host_app(lambda: RunsScreen(runs))
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.screen.loaded, what="runs")
        while app.screen.selected.name != "smollm2-135m-instruct-lora-20261204-235628":
            await pilot.press("down")
        await pilot.pause()
        text = screen_text(app)
        for stamp in ("20261204-235628", "20261205-002333"):
            row = next(ln for ln in text.splitlines() if stamp in ln)
            assert "smollm2" in row and "finished" in row and "1.032" in row, row
        assert "smollm2-stopped " in text and "smollm2-bs64-oom " in text  # short names stay whole
        if size[0] >= 120:  # room for every column
            assert "smollm2-135m-instruct-lora-20261204-235628" in text and "SmolLM2-135M " in text, text
        else:
            header = next(ln for ln in text.splitlines() if ln.lstrip().startswith("Name"))
            assert "Model" not in header and "235628  SmolLM2-135M-Instruct" in text, text


def test_a_name_is_cut_before_a_whole_part():
    from loratui.ui.widgets.tables import name_ellipsis

    name = "smollm2-135m-instruct-lora-20261204-235628"
    assert name_ellipsis(name, 28).plain == "smollm2…lora-20261204-235628"
    assert name_ellipsis(name, 14).plain == "smollm2…235628"
    assert name_ellipsis("smollm2-stopped", 14).plain == "smollm…stopped"
    assert name_ellipsis("abcdefghijklmnopqrstuvwxyz-1", 14).plain == "abcd…tuvwxyz-1"  # no whole part: the middle
    assert name_ellipsis("short", 14).plain == "short"


async def test_the_monitor_header_drops_its_least_telling_parts_at_80_columns(runs):
    """A QA walk read 'step 200/200 · epoch 0.89/1 · final eval: 80' and a title cut after the model: the epoch
    gives way before the phase, the share and precision before the method, no part is cut in its middle."""
    import os
    import time

    from fixtures import host_app, make_live_run
    from loratui.ui.screens.monitor import MonitorScreen

    t = time.time()
    events = [{"kind": "started", "time": t - 260, "max_steps": 200, "epochs": 1, "final_eval_examples": 800,
               "model": "HuggingFaceTB/SmolLM2-135M-Instruct", "method": "lora", "precision": "bf16",
               "trainable_params": 460800, "total_params": 134975808},
              *[{"kind": "step", "time": t - 250 + i, "step": i, "max_steps": 200, "loss": 1.0, "eta_s": 200 - i,
                 "epoch": i / 225, "lr": 1e-4, "tokens_per_s": 9493.2} for i in range(1, 201)],
              {"kind": "phase", "time": t - 30, "phase": "final eval: 800 examples"}]
    run = make_live_run(runs, "smollm2-135m-instruct-lora-20261204-235628", pid=os.getpid(), events=events)
    app = host_app(lambda: MonitorScreen(run))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: app.screen.state == "running", what="running")
        await pilot.pause()
        title, steps = screen_text(app).splitlines()[:2]
        assert title.split() == ["smollm2-135m-instruct-lora-20261204-235628", "running", "lora", "·", "bf16", "·",
                                 "460.8K"], title
        assert steps.rstrip().endswith("100% step 200/200 · final eval: 800 examples…"), steps
        await pilot.resize_terminal(120, 30)
        await pilot.pause()
        title, steps = screen_text(app).splitlines()[:2]
        assert "SmolLM2-135M-Instruct · lora · bf16 · 460.8K (0.34%)" in title, title
        assert "step 200/200 · epoch 0.89/1 · final eval: 800 examples…" in steps, steps


def test_the_gpu_panel_wraps_why_there_is_no_gpu():
    """'no NVIDIA driver on this mach…' in the 30-cell side panel (a QA walk, at 120 columns too): the reason wraps
    at its words."""
    import dataclasses

    from fixtures import no_gpu_snapshot
    from loratui.ui.widgets.gpu_panel import GpuPanel

    panel = GpuPanel()
    snap = dataclasses.replace(no_gpu_snapshot(), error="no NVIDIA driver on this machine")
    panel.snapshot = snap
    lines = [ln.plain for ln in panel._lines(30)]
    assert lines[:3] == ["no NVIDIA GPU", "no NVIDIA driver on this", "machine"], lines
    assert all(len(ln) <= 30 for ln in lines)


@pytest.mark.parametrize("size", [(80, 24), (60, 20)])
async def test_a_switch_hint_reads_whole(fake_core, size):
    """'Remote code ▐ ▌ run code from the model …' (a QA walk at 80x24): the hint fits at 80 columns and wraps under
    its box where the form is narrower."""
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        lines = [ln.split("▏")[0] for ln in screen_text(app).splitlines()]
        at = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("Remote code"))
        hint = " ".join(" ".join(ln.replace("Remote code", "").strip(" ▐▌▆▃▇") for ln in lines[at:at + 3]).split())
        assert hint.startswith("run the repo's own code"), lines[at:at + 3]
        assert "…" not in lines[at]


def test_a_comma_list_wraps_after_its_commas():
    """Compare's targets cell ('down_proj,gate_proj,k_proj,...') has no spaces: it was cut mid-word
    ('down_proj,g…,v_proj'); it wraps after its commas, and one that needs too many lines is still cut in the
    middle."""
    from loratui.ui.widgets.tables import wrap_words

    targets = "down_proj,gate_proj,k_proj,o_proj,q_proj,up_proj,v_proj"
    assert wrap_words(targets, 22).plain.splitlines() == ["down_proj,gate_proj,", "k_proj,o_proj,q_proj,",
                                                         "up_proj,v_proj"]
    assert wrap_words("- (CPU run: host 4.47 GiB)", 16).plain.splitlines() == ["- (CPU run: host", "4.47 GiB)"]
    assert "…" in wrap_words(targets, 10).plain and len(wrap_words(targets, 10).plain) == 10
