"""Setup screen's actions: saving and loading configs (presets, the sample picker), the target picker, the data
preview and launch (pilot tests; the form, the panel and the snapshots are in test_app_setup.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from loratui.ui.app import LoratuiApp
from loratui.core.config import load_config
from loratui.core.errors import ConfigError
from loratui.ui.screens.help import ErrorModal
from loratui.ui.screens.setup import SetupScreen
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.modals import ConfirmModal
from loratui.ui.widgets.setup_modals import ConfigPicker, PreviewModal, TargetPicker

from test_app_setup import REPO, answer_prompt, make_app, panel_text, runs_in, save_as, type_into
from ui_fakes import LAYERS, fake_core, settle  # noqa: F401  (fixture)


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


async def test_saving_an_invalid_form_names_the_field(fake_core, tmp_path):
    """'fix the form before saving' did not say which field (a QA walk: the field was scrolled out of view)."""
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await type_into(pilot, screen, "lora.r", "0")
        await type_into(pilot, screen, "lora.alpha", "-1")
        screen.set_focus(None)
        notes = []
        screen.notify = lambda message, **kw: notes.append(message)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert app.screen is screen and not list(tmp_path.glob("*.yaml"))
        assert notes and notes[-1].startswith("fix the form before saving: lora.r: ") and \
            notes[-1].endswith("(and 1 more)"), notes


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
    """A file that is no config (a section that is not a mapping of keys) is its one-line error; one with mistakes
    in its keys and values opens marked (test_app_setup_draft.py)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora: 8\n")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.screen.load_path(bad)
        await settle(pilot)
        assert isinstance(app.screen, ErrorModal)
        assert "lora: Input should be a valid dictionary" in app.screen.message


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


async def test_with_a_run_training_launch_says_starting_only_after_yes(fake_core, tmp_path, monkeypatch):
    """QA walk: with a run training, ctrl+l toasted 'checking the config and starting the run...' while the dialog
    still asked 'Launch beside it?', and after Cancel nothing started. Focus stays where it was (here: no field)."""
    from loratui.core import runs as core_runs

    monkeypatch.setattr(LoratuiApp, "open_monitor", lambda self, path: None)
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        live = SimpleNamespace(name="busy-run", step=3, max_steps=30)
        monkeypatch.setattr(core_runs, "live_runs", lambda runs_dir: [live])  # what launch finds (not the app's look)

        def starting() -> bool:
            return any(n.message.startswith("checking the config and starting") for n in app._notifications)

        assert setup.focused is None
        await pilot.press("ctrl+l")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal) and "busy-run is training" in app.screen.title_text
        assert not starting()
        await pilot.press("n")
        await settle(pilot)
        assert app.screen is setup and not starting() and fake_core.launched == []
        assert setup.focused is None  # the next letter is a key, not typed into Base model
        await pilot.press("ctrl+l")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert starting() and len(fake_core.launched) == 1


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
        assert runs.RunDir(run).state() == "waiting"
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
