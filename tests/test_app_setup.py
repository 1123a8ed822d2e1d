"""Setup screen: the form validates as you type, the side panel, presets, preview, launch (pilot + snapshots)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from loratui.ui.app import LoratuiApp
from loratui.core.config import load_config
from loratui.core.errors import ConfigError, ModelError
from loratui.ui.screens.help import ErrorModal
from loratui.ui.screens.setup import SetupScreen
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.modals import ConfirmModal, PromptModal
from loratui.ui.widgets.setup_modals import ConfigPicker, PreviewModal, TargetPicker
from loratui.ui.widgets.setup_panel import EstimatePanel

from ui_fakes import LAYERS, fake_core, pinned_config, settle  # noqa: F401  (fixture)

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


async def test_estimate_error_is_a_line_in_the_panel(fake_core, monkeypatch):
    def boom(cfg):
        raise ModelError("model 'nope/nope' not found", field="model.name", hint="check the name")

    monkeypatch.setattr(setup_core, "count_params", boom)
    monkeypatch.setattr(setup_core, "estimate_memory", boom)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen)  # no error modal, no crash
        assert "model.name: model 'nope/nope' not found (check the name)" in panel_text(app)


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


# -- presets --------------------------------------------------------------------------------------------------------


async def test_fill_save_and_reload(fake_core, tmp_path):
    out = tmp_path / "my.yaml"
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await type_into(pilot, screen, "lora.r", "16")
        await type_into(pilot, screen, "lora.alpha", "32")
        await type_into(pilot, screen, "lora.target_modules", "q_proj, k_proj, v_proj")
        await settle(pilot)
        assert not screen.errors
        await save_as(pilot, out)
        assert out.is_file() and app.screen is screen
        saved = yaml.safe_load(out.read_text())
        assert saved["lora"]["r"] == 16 and saved["lora"]["alpha"] == 32
        assert saved["lora"]["target_modules"] == ["q_proj", "k_proj", "v_proj"]
        assert load_config(out).lora.r == 16
        # change the form, then load the saved file back through the picker's "Other file..."
        await type_into(pilot, screen, "lora.r", "4")
        await type_into(pilot, screen, "lora.alpha", "4")
        screen.set_focus(None)
        await pilot.press("ctrl+o")
        await settle(pilot)
        assert isinstance(app.screen, ConfigPicker)
        await pilot.press("end", "enter")  # the last entry: Other file...
        await settle(pilot)
        await answer_prompt(pilot, str(out))
        assert isinstance(app.screen, ConfirmModal)  # the edits since saving are in no file: replace them?
        await pilot.press("y")
        await settle(pilot)
        assert app.screen is screen
        assert screen.field("lora.r").get_raw() == "16"
        assert screen.field("lora.alpha").get_raw() == "32"
        assert screen.field("lora.target_modules").get_raw() == "q_proj, k_proj, v_proj"
        assert screen.sub_title.endswith("my.yaml")


async def test_save_asks_before_overwriting(fake_core, tmp_path):
    out = tmp_path / "keep.yaml"
    out.write_text("# mine\n")
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await save_as(pilot, out)
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("n")
        await settle(pilot)
        assert out.read_text() == "# mine\n"
        await save_as(pilot, out)
        await pilot.press("y")
        await settle(pilot)
        assert "lora" in yaml.safe_load(out.read_text())


async def test_sample_config_picker_loads_a_sample(fake_core):
    samples = setup_core.list_sample_configs()
    if not any(p.name == "minilm-sentiment.yaml" for p in samples):
        pytest.skip("sample configs not present")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+o")
        await settle(pilot)
        picker = app.screen
        assert isinstance(picker, ConfigPicker)
        index = [p.name for p in picker.files].index("minilm-sentiment.yaml")
        picker.query_one("#config-list").highlighted = index
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, SetupScreen)
        assert screen.field("model.task").get_raw() == "seq-cls"
        assert screen.field("data.format").get_raw() == "classification"
        assert screen.field("data.label_column").display and not screen.field("data.output_column").display


async def test_loading_a_broken_file_shows_the_error(fake_core, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora:\n  rank: 8\n")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.screen.load_path(bad)
        await settle(pilot)
        assert isinstance(app.screen, ErrorModal)
        assert "unknown key 'rank'" in app.screen.message


# -- target picker and preview ----------------------------------------------------------------------------------------


async def test_target_picker_lists_the_models_layers(fake_core):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await pilot.press("ctrl+t")
        await settle(pilot)
        picker = app.screen
        assert isinstance(picker, TargetPicker)
        assert picker.layer_names == LAYERS
        sl = picker.query_one("#layer-list")
        assert sorted(sl.selected) == ["q_proj", "v_proj"]
        sl.select("o_proj")
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is screen
        assert screen.field("lora.target_modules").get_raw() == "o_proj, q_proj, v_proj"
        assert screen.values["lora"]["target_modules"] == ["o_proj", "q_proj", "v_proj"]


async def test_data_preview_modal(fake_core, monkeypatch):
    examples = [SimpleNamespace(segments=[("<|user|>Extract the contact\n", False), ('{"name": "Ada"}', True)],
                                n_tokens=17, truncated=False, label=None, loss_tokens=6)]
    monkeypatch.setattr(setup_core, "preview", lambda cfg, n=3: examples)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, PreviewModal)
        body = app.screen.query(".preview-body").first().render()
        assert "Extract the contact" in str(body) and '{"name": "Ada"}' in str(body)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, SetupScreen)


# -- launch --------------------------------------------------------------------------------------------------------


async def test_launch_creates_the_run_and_opens_the_monitor(fake_core, tmp_path, monkeypatch):
    opened: list[Path] = []
    monkeypatch.setattr(LoratuiApp, "open_monitor", lambda self, path: opened.append(Path(path)))
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+l")
        await settle(pilot)
        runs = runs_in(tmp_path)
        assert len(runs) == 1 and (runs[0] / "config.yaml").is_file()
        assert fake_core.preflight and len(fake_core.launched) == 1
        assert opened == [runs[0]]
        assert load_config(runs[0] / "config.yaml").lora.target_modules == ["q_proj", "v_proj"]


async def test_preflight_error_opens_the_modal_and_marks_the_field(fake_core, tmp_path, monkeypatch):
    def preflight(cfg):
        raise ConfigError("batch 8 does not fit", field="train.batch_size", hint="halve batch size")

    monkeypatch.setattr(setup_core, "preflight", preflight)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        await pilot.press("ctrl+l")
        await settle(pilot)
        modal = app.screen
        assert isinstance(modal, ErrorModal)
        assert modal.message == "train.batch_size: batch 8 does not fit"
        assert modal.hint == "halve batch size"
        assert runs_in(tmp_path) == [] and fake_core.launched == []
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is setup
        assert setup.field("train.batch_size").error == "batch 8 does not fit"
        await type_into(pilot, setup, "train.batch_size", "4")
        assert setup.field("train.batch_size").error is None


async def test_launch_with_the_real_light_modules(tmp_path, monkeypatch):
    """Real config loading, real GPU query (none here), real run folder; only the engine spawn is replaced."""
    import loratui.core.runs as runs

    launched = []
    monkeypatch.setattr(runs, "launch_detached", lambda run, **kw: launched.append(run) or 1)
    monkeypatch.setattr(setup_core, "preflight", lambda cfg: None)  # the real one loads the model
    monkeypatch.setattr(setup_core, "compute_estimate",
                        lambda cfg, want_layers=True: setup_core.EstimateResult(gpus=setup_core.query_gpus()))
    monkeypatch.setattr(SetupScreen, "DEBOUNCE", 0)
    opened = []
    monkeypatch.setattr(LoratuiApp, "open_monitor", lambda self, path: opened.append(Path(path)))
    cfg = load_config(REPO / "sample_configs" / "smollm2-demo.yaml")
    app = LoratuiApp(cfg, config_source="smollm2-demo.yaml", runs_dir=str(tmp_path / "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+l")
        await settle(pilot)
        (run,) = runs_in(tmp_path)
        assert launched and Path(launched[0].path) == run
        assert runs.RunDir(run).state() == "created"
        assert load_config(run / "config.yaml").model.name == "smollm2-135m-instruct"
        assert opened == [run]


@pytest.mark.slow
async def test_real_estimate_for_the_demo(monkeypatch):
    """The real core (torch, meta-device model) behind the panel: exact SmolLM2 numbers."""
    monkeypatch.setattr(SetupScreen, "DEBOUNCE", 0)
    cfg = load_config(REPO / "sample_configs" / "smollm2-demo.yaml")
    app = LoratuiApp(cfg)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = panel_text(app)
        assert "trainable 4,884,480 of 139,399,488" in text
        assert app.screen.known_layers() and "q_proj" in app.screen.known_layers()


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


# -- several cards (issue 7) --------------------------------------------------------------------------------------------


def _four_cards(monkeypatch):
    from fixtures import h100_cards

    cards = h100_cards(4, {9: 0})  # card 0 busy (65.8 GiB free), 1-3 idle
    monkeypatch.setattr(setup_core, "query_gpus", lambda: cards)
    return cards


def _two_card_config():
    cfg = pinned_config()
    cfg.train.gpus = 2
    return cfg


async def test_cards_listed_with_the_chosen_ones_and_the_effective_batch(fake_core, monkeypatch):
    _four_cards(monkeypatch)
    app = make_app(cfg=_two_card_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        text = panel_text(app)
        assert "DDP x 2: 1.98 GiB a card" in text and "a full replica on each card" in text
        lines = text.splitlines()
        chosen = [ln for ln in lines if ln.startswith("▸")]
        assert [ln.split()[0] for ln in chosen] == ["▸0", "▸1"] and all(ln.rstrip().endswith("✓") for ln in chosen)
        assert any(ln.startswith(" 2 H100 80GB HBM3") and "79.5 free" in ln for ln in lines)
        assert "65.8 free" in chosen[0]
        assert "batch 8 a card x 2 cards x 1 accumulation = 16 a step" in text
        assert app.screen.values["train"]["gpus"] == 2 and not app.screen.errors


async def test_a_bad_gpus_choice_is_the_fields_one_line_error(fake_core, monkeypatch):
    _four_cards(monkeypatch)
    app = make_app(cfg=_two_card_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await type_into(pilot, screen, "train.gpus", "6")
        await settle(pilot)
        err = screen.errors.get("train.gpus")
        assert err == "train.gpus asks for 6 cards, 4 visible (use at most 4, or auto)"
        assert screen.field("train.gpus").error == err and "\n" not in err
        assert "train.gpus asks for 6 cards" in panel_text(app)
        assert screen.current_config() is None  # launch waits
        await type_into(pilot, screen, "train.gpus", "1,3")
        await settle(pilot)
        assert "train.gpus" not in screen.errors and screen.values["train"]["gpus"] == [1, 3]
        text = panel_text(app)
        assert [ln.split()[0] for ln in text.splitlines() if ln.startswith("▸")] == ["▸1", "▸3"]
        await type_into(pilot, screen, "train.gpus", "[9]")
        await settle(pilot)
        assert screen.errors["train.gpus"].startswith("train.gpus names card 9, not among the visible cards")
        await type_into(pilot, screen, "train.gpus", "two")
        await settle(pilot)
        assert screen.errors["train.gpus"].startswith("auto, a count of cards")


async def test_without_gpus_the_panel_says_cpu_and_a_count_is_refused(fake_core):
    app = make_app(cfg=_two_card_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "no NVIDIA GPU found: training runs on CPU" in panel_text(app)
        assert app.screen.errors["train.gpus"].startswith("train.gpus names cards, but no NVIDIA GPU is visible")


def test_fsdp_shards_weights_grads_and_optimizer_per_card():
    from ui_fakes import ROWS

    from fixtures import h100_cards
    from loratui.core.devices import plan_devices
    from loratui.ui.widgets.setup_panel import per_card, row_strategy

    cfg = pinned_config()
    cfg.train.gpus, cfg.train.distributed = 4, "fsdp"
    cards = h100_cards(4)
    plan = plan_devices(cfg, cards)
    row = ROWS[1]
    assert row_strategy(plan, row, cards, cfg, first=True) == "fsdp"
    sharded = (row.weights + row.grads + row.optimizer) / 4 + row.activations + row.overhead
    assert per_card(row, "fsdp", 4) == int(sharded) < row.total
    assert per_card(row, "ddp", 4) == row.total
    cfg.train.distributed = "auto"  # auto: DDP for LoRA; FSDP for full fine-tuning past 90 % of a card
    plan = plan_devices(cfg, cards)
    assert row_strategy(plan, ROWS[0], cards, cfg, first=True) == "ddp"
    big = type(row)("full fine-tuning", 30 * GIB_, 30 * GIB_, 60 * GIB_, 2 * GIB_, GIB_)
    assert row_strategy(plan, big, cards, cfg, first=False) == "fsdp"


GIB_ = 1024**3


@pytest.mark.parametrize("text,value", [("auto", "auto"), ("", "auto"), ("2", 2), ("0,2", [0, 2]), ("[1]", [1]),
                                        (" 1, 3, ", [1, 3]), ("two", "two")])
def test_gpus_field_reads_auto_a_count_or_indices(text, value):
    from loratui.ui.widgets.form import SPECS_BY_PATH, format_value, parse_value

    spec = SPECS_BY_PATH["train.gpus"]
    assert spec.kind == "text" and SPECS_BY_PATH["train.distributed"].choices == ["auto", "none", "ddp", "fsdp"]
    assert parse_value(spec, text) == value
    if value != "two":
        assert parse_value(spec, format_value(spec, value)) == value  # [1] stays one index, not a count


def test_setup_snapshot_four_cards_two_chosen(fake_core, monkeypatch, snap_compare):
    _four_cards(monkeypatch)
    assert snap_compare(make_app(cfg=_two_card_config()), terminal_size=(80, 24), run_before=_ready)
