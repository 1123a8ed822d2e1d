"""Setup for preference tuning (issue 20): the objective field, its knobs shown only where they apply, the
preference data format, start_from picked from the runs, and the saved file read back by `loratui train`'s loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from loratui.core.config import load_config
from loratui.ui.app import LoratuiApp
from loratui.ui.widgets.choice_modal import ChoiceModal

from test_adapters import write_adapter
from test_app_setup import save_as, type_into
from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("utc")

KNOBS = ("method.beta", "method.loss_type", "method.label_smoothing", "method.desirable_weight",
         "method.undesirable_weight")


def shown(screen) -> set[str]:
    return {p for p in KNOBS + ("data.prompt_column", "data.chosen_column", "data.completion_column")
            if screen.field(p).display}


async def choose(pilot, screen, path: str, value: str) -> None:
    screen.field(path).control.value = value
    await settle(pilot)


async def test_objective_shows_its_knobs_and_keeps_the_rest_of_the_form(fake_core):
    app = LoratuiApp(pinned_config())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await type_into(pilot, screen, "lora.r", "16")
        assert shown(screen) == set()  # sft: no preference knob
        notes = []
        screen.notify = lambda message, **kw: notes.append(message)
        screen.values["train"]["lr"] = 1e-3  # an SFT learning rate (the demo's), kept by the switch: said once
        await choose(pilot, screen, "method.objective", "dpo")
        assert any(n.startswith("train.lr is 0.001: DPO and KTO usually train far lower") for n in notes), notes
        assert shown(screen) == {"method.beta", "method.loss_type", "method.label_smoothing"}
        # the data are still alpaca: one line, under the field it names, and launch waits
        assert screen.field("data.format").error == ("must be preference when method.objective is dpo (rows of "
                                                      "prompt, chosen, rejected)")
        assert screen.current_config() is None
        await choose(pilot, screen, "data.format", "preference")
        assert screen.field("data.format").error is None and screen.cross_error is None
        assert {"data.prompt_column", "data.chosen_column"} <= shown(screen)
        await choose(pilot, screen, "method.loss_type", "ipo")
        await type_into(pilot, screen, "method.beta", "0")
        assert screen.field("method.beta").error == "must be more than 0, got '0' (the default is 0.1)"
        await type_into(pilot, screen, "method.beta", "0.3")
        # orpo: no loss variants (the DPO loss goes back to sigmoid, kept aside), the rest stays
        await choose(pilot, screen, "method.objective", "orpo")
        assert shown(screen) == {"method.beta", "data.prompt_column", "data.chosen_column"}
        assert not screen.errors and screen.current_config() is not None
        cfg = screen.current_config()
        assert (cfg.method.objective, cfg.method.loss_type, cfg.method.beta, cfg.lora.r) == ("orpo", "sigmoid", 0.3, 16)
        await choose(pilot, screen, "method.objective", "kto")
        assert shown(screen) == {"method.beta", "method.desirable_weight", "method.undesirable_weight",
                                 "data.prompt_column", "data.chosen_column", "data.completion_column"}
        await choose(pilot, screen, "method.objective", "dpo")  # the DPO loss chosen before comes back
        cfg = screen.current_config()
        assert (cfg.method.loss_type, cfg.method.beta, cfg.lora.r, cfg.data.format) == ("ipo", 0.3, 16, "preference")


async def test_dpo_from_a_picked_run_saves_what_the_cli_loads(fake_core, tmp_path):
    sft = tmp_path / "runs" / "demo-sft"  # a finished SFT run (its adapter's weights: two tiny tensors)
    write_adapter(sft / "adapter", r=16, base="smollm2-135m-instruct", layers=1)
    (sft / "config.yaml").write_text(pinned_config().to_yaml())
    (sft / "status.json").write_text(json.dumps({"state": "finished"}))
    cls = tmp_path / "runs" / "a-classifier"  # a classifier's adapter: not offered to a language model (a QA walk)
    write_adapter(cls / "adapter", r=8, base="minilm-l6-v2", task="SEQ_CLS", layers=1)
    (cls / "config.yaml").write_text(pinned_config().to_yaml())
    out = tmp_path / "dpo.yaml"
    app = LoratuiApp(pinned_config(), runs_dir=str(tmp_path / "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        screen = app.screen
        await choose(pilot, screen, "method.objective", "dpo")
        await choose(pilot, screen, "data.format", "preference")
        await type_into(pilot, screen, "data.source", "sample:contacts-json-pref.jsonl")
        await type_into(pilot, screen, "method.start_from", str(tmp_path))
        assert screen.field("method.start_from").error.startswith("holds no adapter")
        screen.field("method.start_from").query_one("#pick-start").press()
        await settle(pilot)
        assert isinstance(app.screen, ChoiceModal) and "demo-sft" in str(app.screen.choices)
        assert "a-classifier" not in str(app.screen.choices)
        await pilot.press("enter")
        await settle(pilot)
        assert screen.field("method.start_from").get_raw() == str(sft.resolve())
        assert str(screen.query_one("#title-lora").render()) == "LoRA (not used: the adapter's own)"
        assert not screen.visible_errors() and screen.current_config() is not None
        await pilot.press("escape")
        await save_as(pilot, out)
    saved = yaml.safe_load(out.read_text())
    assert saved["method"] == {"objective": "dpo", "start_from": str(sft.resolve())}
    assert saved["data"]["format"] == "preference" and saved["data"]["source"] == "sample:contacts-json-pref.jsonl"
    cfg = load_config(out)  # what `loratui train dpo.yaml` reads
    assert (cfg.method.objective, cfg.method.start_from, cfg.data.format) == ("dpo", str(sft.resolve()), "preference")
