"""A config file with mistakes opens in Setup to be fixed there: its valid values in the form, each value that does
not validate shown in its field and marked (the run cannot launch until it is fixed), keys that are no setting named
in a notification with the name to use, and saving writes the fixed file. `loratui train` still says the one line."""

from __future__ import annotations

import pytest
import yaml

from fixtures import wait_until
from loratui.core.config import load_config
from loratui.core.config_draft import draft_from_dict
from loratui.core.errors import ConfigError, LoratuiError
from loratui.ui.app import LoratuiApp, run_app
from loratui.ui.widgets import setup_core
from loratui.ui.widgets.modals import ConfirmModal

from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc")

BROKEN = {"model": {"name": "smollm2-135m-instruct"},
          "method": {"kind": "qlora4"},
          "lora": {"r": "sixteen", "alpha": 32},
          "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_length": 128},
          "train": {"max_steps": 40, "batch_size": 4, "lr": -0.001, "learning_rate": 0.0002}}


def test_a_draft_keeps_the_good_values_and_names_each_mistake():
    draft = draft_from_dict(BROKEN)
    assert draft.bad == {"method.kind": "qlora4", "lora.r": "sixteen", "train.lr": -0.001}
    assert draft.unknown == ["train.learning_rate"] and "did you mean 'lr'" in draft.messages["train.learning_rate"]
    cfg = draft.config
    assert (cfg.lora.alpha, cfg.train.max_steps, cfg.train.batch_size, cfg.data.max_length) == (32, 40, 4, 128)
    assert cfg.method.kind == "lora" and cfg.lora.r == 8  # the defaults, until the user fixes them
    assert draft_from_dict({"lora": 5}) is None  # a section that is not a mapping: its one line stands
    assert draft_from_dict(["model"]) is None


async def test_open_a_config_with_mistakes_fix_it_in_place_and_save(fake_core, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(BROKEN))
    with pytest.raises(ConfigError):
        load_config(path)
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        assert setup.load_path(path)
        await settle(pilot)
        assert setup.field("lora.r").control.value == "sixteen" and "lora.r" in setup.visible_errors()
        assert setup.field("train.lr").control.value == "-0.001" and "train.lr" in setup.visible_errors()
        assert "qlora4" in setup.field("method.kind").error  # the choice shows the default, with why
        assert setup.values["lora"]["alpha"] == 32 and setup.values["train"]["max_steps"] == 40
        assert setup.current_config() is None  # no launch until they are fixed
        assert not setup.modified and "modified" not in setup.sub_title  # the file's own mistakes are no edit (QA walk)
        assert setup.query_one("#form-status").render().plain.startswith("2 fields to fix before launch")
        shown = [n.message for n in app._notifications]
        assert any("2 values to fix, marked in the form: lora.r, train.lr" in m  # as many as the form's line says
                   and "shown at the default until you choose: method.kind (the file's 'qlora4')" in m
                   and "left out: train.learning_rate: unknown key 'learning_rate' (did you mean 'lr'?)" in m
                   for m in shown), shown
        for path_, text in (("lora.r", "16"), ("train.lr", "0.0002")):
            box = setup.field(path_).control
            box.focus()
            box.value = ""
            await pilot.press(*text, "escape")
            assert setup.modified  # an edit now
        setup.field("method.kind").control.value = "qlora"
        await settle(pilot)
        assert not setup.visible_errors() and setup.field("method.kind").error is None
        cfg = setup.current_config()
        assert (cfg.method.kind, cfg.lora.r, cfg.train.lr, cfg.lora.alpha) == ("qlora", 16, 0.0002, 32)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is not setup, what="save dialog")
        assert app.screen.query_one("#prompt-input").value == str(path)  # the file it came from
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal), what="overwrite question")
        await pilot.press("y")
        await wait_until(pilot, lambda: app.screen is setup and not setup.modified, what="saved")
    fixed = load_config(path)
    assert (fixed.method.kind, fixed.lora.r, fixed.train.lr, fixed.train.max_steps) == ("qlora", 16, 0.0002, 40)


def test_the_app_opens_a_config_with_mistakes_and_not_one_that_is_no_config(tmp_path, monkeypatch):
    opened = {}

    def fake_run(self):
        opened["cfg"], opened["draft"] = self.initial_config, self.initial_draft

    monkeypatch.setattr(LoratuiApp, "run", fake_run)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(BROKEN))
    assert run_app(str(path)) == 0
    assert opened["cfg"].lora.alpha == 32 and opened["draft"].bad["lora.r"] == "sixteen"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        run_app(str(path))


async def test_marks_show_in_the_sections_mounted_after_the_first_frame(fake_core):
    """`loratui --config mine.yaml`: the form's later sections mount after the first frame, each control saying its
    value as it mounts; the choice's note stayed only where the user had not picked."""
    draft = draft_from_dict(BROKEN)
    app = LoratuiApp(draft.config, draft=draft)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        assert "qlora4" in (setup.field("method.kind").error or "")
        assert setup.field("lora.r").control.value == "sixteen" and set(setup.visible_errors()) == {"lora.r", "train.lr"}
        setup.field("method.kind").control.value = "full"
        await settle(pilot)
        assert setup.field("method.kind").error is None


async def test_a_key_that_is_no_setting_is_named_with_the_name_to_use(fake_core, tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("lora:\n  rank: 4\n  alpha: 8\n")
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        assert setup.load_path(path)
        await settle(pilot)
        assert setup.values["lora"]["alpha"] == 8 and setup.source == str(path)
        shown = [n.message for n in app._notifications]
        assert any("left out: lora.rank: unknown key 'rank' (did you mean 'r'?)" in m for m in shown), shown


async def test_a_study_is_not_opened_as_a_run_config(fake_core, tmp_path):
    """QA walk: Open listed study-reviews3-rank, which loaded as a form of defaults titled with the study's file and
    ctrl+l launched a SmolLM run under the study's name. Open lists no study; one opened by path loads nothing."""
    listed = [p.name for p in setup_core.list_sample_configs()]
    assert "smollm2-demo.yaml" in listed and not [n for n in listed if n.startswith("study-")]
    app = LoratuiApp(pinned_config(), config_source="mine.yaml")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        assert not setup.load_path("sample_configs/study-reviews3-rank.yaml")
        await settle(pilot)
        assert setup.sub_title == "Setup: mine.yaml" and setup.values["lora"]["preset"] == "minimal-qv"
        shown = [n.message for n in app._notifications]
        assert any("study-reviews3-rank.yaml is a study: queue it with `loratui study" in m
                   and "or the Queue (w)" in m for m in shown), shown
        assert not any("unknown key" in m for m in shown), shown
    with pytest.raises(LoratuiError, match="is a study"):
        run_app(str(setup_core.find_config("sample_configs/study-lora-vs-full.yaml")))


async def test_the_files_marks_go_once_the_fixed_config_is_saved(fake_core, tmp_path):
    """QA walk: bad.yaml's method 'lorra', left at the default it showed (lora), fixed everything else, saved as
    fixed.yaml and launched: Method still said "the file's 'lorra' is not allowed here: lora until you choose"."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(BROKEN))
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        setup = app.screen
        assert setup.load_path(bad)
        await settle(pilot)
        for path_, text in (("lora.r", "16"), ("train.lr", "0.0002")):
            setup.field(path_).control.value = text
        await settle(pilot)
        assert "qlora4" in setup.field("method.kind").error and not setup.visible_errors()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is not setup, what="save dialog")
        box = app.screen.query_one("#prompt-input")
        box.value = str(tmp_path / "fixed.yaml")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.screen is setup and setup.source.endswith("fixed.yaml"), what="saved")
        await settle(pilot)
        assert setup.field("method.kind").error is None and not setup.modified
    assert load_config(tmp_path / "fixed.yaml").method.kind == "lora"
