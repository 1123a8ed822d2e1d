"""Setup screen on a box with several cards (issue 7): the cards listed with the chosen ones, train.gpus checked
against them, the per-card estimate (DDP, FSDP) and its snapshot."""

from __future__ import annotations

import pytest

from loratui.ui.widgets import setup_core

from test_app_setup import _ready, make_app, panel_text, type_into
from ui_fakes import fake_core, pinned_config, settle  # noqa: F401  (fixture)


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
