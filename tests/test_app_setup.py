"""Setup screen: the form validates as you type, the side panel and the screen's snapshots; its actions
(presets, pickers, preview, launch) are in test_app_setup_actions.py, several cards in test_app_setup_cards.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from loratui.ui.app import LoratuiApp
from loratui.core.config import load_config
from loratui.core.errors import ModelError
from loratui.ui.screens.setup import SetupScreen
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.modals import PromptModal
from loratui.ui.widgets.setup_panel import EstimatePanel

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parent.parent


def make_app(tmp_path: Path | None = None, cfg=None) -> LoratuiApp:
    runs = str(tmp_path / "runs") if tmp_path else None
    return LoratuiApp(cfg or pinned_config(), runs_dir=runs)


def panel_text(app) -> str:
    panel = app.screen.query_one(EstimatePanel)
    from rich.console import Console

    console = Console(width=60, record=True, file=open("/dev/null", "w"))
    console.print(panel.build(60))
    return console.export_text()


async def type_into(pilot, screen: SetupScreen, path: str, text: str) -> None:
    """Focus a field and type (long text is pasted in one go: the pilot spends ~0.1 s a key)."""
    ctl = screen.field(path).control
    ctl.focus()
    await pilot.pause()
    await pilot.press("ctrl+u")
    if len(text) <= 8:
        await pilot.press(*text)
    else:
        ctl.insert_text_at_cursor(text)
    await pilot.pause()


async def answer_prompt(pilot, text: str) -> None:
    """Type into the path prompt on top and press enter."""
    prompt = pilot.app.screen
    assert isinstance(prompt, PromptModal)
    prompt.query_one("#prompt-input").value = text
    await pilot.press("enter")
    await settle(pilot)


async def save_as(pilot, path: Path) -> None:
    """ctrl+s, then the path typed into the prompt it opens."""
    await pilot.press("ctrl+s")
    await settle(pilot)
    await answer_prompt(pilot, str(path))


def runs_in(tmp_path: Path) -> list[Path]:
    d = tmp_path / "runs"
    return sorted(p for p in d.iterdir()) if d.is_dir() else []


# -- form and panel ------------------------------------------------------------------------------------------------


async def test_prefilled_form_and_live_panel(fake_core):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, SetupScreen)
        assert screen.field("lora.r").get_raw() == "8"
        assert screen.field("lora.target_modules").get_raw() == "q_proj, v_proj"  # the preset, written out
        text = panel_text(app)
        assert "trainable 460,800 of 134,975,808 (0.34%)" in text
        assert "this (lora)" in text and "full FT" in text
        assert "QLoRA 4-bit" not in text and "(QLoRA: needs an NVIDIA GPU)" in text  # issue 19 item 18
        assert "no NVIDIA GPU found: training runs on CPU" in text
        # typing a new rank recomputes the estimate
        await type_into(pilot, screen, "lora.r", "16")
        await settle(pilot)
        assert "trainable 921,600" in panel_text(app)


async def test_gpu_fit_shown(fake_core, monkeypatch):
    gpu = SimpleNamespace(index=0, name="NVIDIA H100 80GB HBM3", memory_total=80 * 1024**3,
                          memory_used=78 * 1024**3, memory_free=2 * 1024**3)
    monkeypatch.setattr(setup_core, "query_gpus", lambda: [gpu])
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        text = panel_text(app)
        assert "GPU 0: NVIDIA H100" in text
        assert "fits: needs 1.98 GiB" in text  # this config fits the 2 GiB free; full fine-tuning does not
        row = next(line for line in text.splitlines() if line.startswith("full FT"))
        assert row.split()[-2:] == ["3.90", "no"]


HUB_ERROR = ModelError(
    "'acme/no-such-model' is not a local folder and could not be fetched from the hub (We couldn't connect to "
    "'https://huggingface.co' to load the files, and couldn't find them in the cached files.)", field="model.name",
    hint="check the id and your network or HF token, or give a local folder",
    summary="no such local folder, and offline: not in the hub's cache here")


async def test_an_unknown_base_model_is_said_once_under_its_field(fake_core, monkeypatch):
    """A walk at 80x24 typed a model id that is nowhere (offline): the same 9-line error filled both the Parameters
    and the Memory estimate panels. Now it is said once, under Base model: a few words, then the fix; the panel
    points at it. A model that loads clears it."""
    from fixtures import screen_text

    real_count = setup_core.count_params

    def boom(cfg):
        if cfg.model.name == "acme/no-such-model":
            raise HUB_ERROR
        return real_count(cfg)

    monkeypatch.setattr(setup_core, "count_params", boom)
    monkeypatch.setattr(setup_core, "estimate_memory", lambda cfg: boom(cfg) and SimpleNamespace(rows=[]))
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await type_into(pilot, screen, "model.name", "acme/no-such-model")
        await settle(pilot)
        field = screen.field("model.name")
        assert str(field.error) == ("no such local folder, and offline: not in the hub's cache here\n"
                                    "fix: check the id and your network or HF token, or give a local folder")
        text = screen_text(app)
        assert text.count("no such local folder") == 1 and "couldn't connect" not in text
        panel = panel_text(app)
        assert "waiting for a Base model it can read (see the form)" in panel and "Memory estimate" not in panel
        assert "model.name" not in screen.errors  # a valid value: launch still says why in its dialog, in full
        await type_into(pilot, screen, "model.name", "smollm2-135m-instruct")
        await settle(pilot)
        assert field.error is None and "trainable 460,800" in panel_text(app)


async def test_an_estimate_error_of_no_field_on_the_form_is_one_line_in_the_panel(fake_core, monkeypatch):
    def boom(cfg):
        raise ModelError("model 'nope/nope' not found (the hub said 404)", field="model.revision", hint="check it")

    monkeypatch.setattr(setup_core, "count_params", boom)
    monkeypatch.setattr(setup_core, "estimate_memory", boom)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen)  # no error modal, no crash
        panel = panel_text(app)
        assert "model 'nope/nope' not found\nfix: check it\nthe hub said 404" in panel
        assert panel.count("nope/nope") == 1 and "Memory estimate" not in panel
    monkeypatch.setattr(setup_core, "count_params", lambda cfg: 1 / 0)  # no field named: one red line, once
    monkeypatch.setattr(setup_core, "estimate_memory", lambda cfg: 1 / 0)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        panel = panel_text(app)
        assert panel.count("division by zero") == 1 and "Memory estimate" not in panel


async def test_bad_values_show_beside_the_field_and_block_launch(fake_core, tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        # r = 0
        await type_into(pilot, screen, "lora.r", "0")
        assert screen.field("lora.r").error == "must be a positive whole number (try 8 or 16)"
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert runs_in(tmp_path) == [] and fake_core.launched == []
        assert app.focused is screen.field("lora.r").control  # launch took you to the field
        await type_into(pilot, screen, "lora.r", "8")
        assert screen.field("lora.r").error is None
        # a data file that is not there
        await type_into(pilot, screen, "data.source", str(tmp_path / "missing.jsonl"))
        assert "no such file" in screen.field("data.source").error
        await pilot.press("f5")
        await settle(pilot)
        assert runs_in(tmp_path) == [] and fake_core.launched == []
        await type_into(pilot, screen, "data.source", "sample:contacts-json.jsonl")
        # a target module the model does not have
        await type_into(pilot, screen, "lora.target_modules", "q_proj, nope_proj")
        await settle(pilot)
        assert screen.field("lora.target_modules").error.startswith("not in this model: nope_proj")
        assert screen.field("lora.preset").get_raw() == screen.field("lora.preset").control.NULL  # preset cleared
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert runs_in(tmp_path) == [] and fake_core.launched == []
        # a value pydantic cannot parse, and an empty required one
        await type_into(pilot, screen, "train.lr", "fast")
        assert screen.field("train.lr").error.startswith("must be a number")
        await type_into(pilot, screen, "train.batch_size", "")
        assert screen.field("train.batch_size").error == "required"


async def test_cross_section_rule_blocks_launch(fake_core, tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        screen.field("data.format").control.value = "classification"
        await settle(pilot)
        assert screen.cross_error and "seq-cls" in screen.cross_error
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert runs_in(tmp_path) == []


async def test_method_changes_what_is_shown(fake_core):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert not screen.field("method.quant_type").display
        screen.field("method.kind").control.value = "qlora"
        await settle(pilot)
        assert screen.field("method.quant_type").display and screen.field("lora.r").display
        screen.field("method.kind").control.value = "full"
        await settle(pilot)
        assert not screen.field("lora.r").display


# -- snapshots --------------------------------------------------------------------------------------------------------


async def _ready(pilot) -> None:
    await settle(pilot)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_setup_snapshot(fake_core, snap_compare, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_ready)


def test_setup_snapshot_with_errors(fake_core, snap_compare):
    async def before(pilot):
        await settle(pilot)
        screen = pilot.app.screen
        await type_into(pilot, screen, "lora.r", "0")
        await type_into(pilot, screen, "lora.alpha", "x")
        screen.set_focus(None)  # no blinking cursor in the picture
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=before)


async def test_loaded_config_moves_runs_and_adapters_to_its_runs_folder(fake_core, tmp_path):
    """Without --runs-dir, the Runs and Adapters screens follow the runs folder of the config shown in Setup."""
    cfg = pinned_config()
    cfg.output.runs_dir = str(tmp_path / "elsewhere" / "runs")
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.runs_dir == Path("runs")
        app.screen.load_config(cfg)
        await settle(pilot)
        assert app.runs_dir == tmp_path / "elsewhere" / "runs"
    pinned = LoratuiApp(pinned_config(), runs_dir=tmp_path / "cli")
    async with pinned.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        pinned.screen.load_config(cfg)
        await settle(pilot)
        assert pinned.runs_dir == tmp_path / "cli"  # an explicit --runs-dir wins


async def test_saved_yaml_reads_on_its_own(fake_core, tmp_path):
    """Issue 9 defect 10: the YAML saved from Setup left out the model and the data source (defaults) and kept both
    target_modules and preset."""
    out = tmp_path / "mine.yaml"
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await save_as(pilot, out)
    data = yaml.safe_load(out.read_text())
    assert data["model"]["name"] == "smollm2-135m-instruct"
    assert data["data"]["source"] == "sample:contacts-json.jsonl"
    assert data["lora"]["preset"] == "minimal-qv" and "target_modules" not in data["lora"]
    assert load_config(out).lora.preset == "minimal-qv"


async def test_choice_lists_open_above_the_footer_at_80x24(fake_core):
    """Issue 9 defect 12: the Select dropdown covered the footer at 80x24."""
    from textual.widgets import Footer
    from textual.widgets._select import SelectOverlay

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        footer = screen.query_one(Footer).region
        for select in screen.query("#setup-form Select"):
            if not select.display or not select.parent.parent.display:
                continue
            select.focus()
            await pilot.pause()
            await pilot.press("enter")
            await pilot.pause()
            overlay = select.query_one(SelectOverlay)
            assert overlay.display, select.id
            assert not overlay.region.overlaps(footer), (select.id, overlay.region, footer)
            await pilot.press("escape")
            await pilot.pause()
        label = screen.field("data.validation_file").query_one(".field-label")
        assert label.content_region.right < screen.field("data.validation_file").control.region.x  # a gap


async def test_a_wider_terminal_never_narrows_the_form(fake_core):
    """QA walk: at 100x30 the side panel took 60 columns and left the form 40, less than at 80x24 ('Start from
    empty: a new    pick', the remote-code line wrapped)."""
    widths = {}
    for size in ((80, 24), (100, 30), (119, 30), (120, 40)):
        app = make_app()
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            widths[size[0]] = app.screen.query_one("#setup-form").size.width
    assert widths[80] <= widths[100] <= widths[119] and widths[100] >= 58, widths
    assert widths[120] >= widths[100] - 2, widths
