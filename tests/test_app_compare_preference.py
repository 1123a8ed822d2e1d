"""Compare with a preference run beside an SFT run (issue 20): the rewards' rows (chosen/rejected, margin and
preference accuracy, final and best) show only when some compared run has them, SFT runs read '-' there, and all of
it fits 80 columns. The run folders are written by hand in the protocol's shapes (no training)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from textual.widgets import DataTable

from fixtures import host_app, screen_text, wait_until
from loratui.core import compare
from loratui.core.config import RunConfig
from loratui.ui.screens.compare import CompareScreen

pytestmark = pytest.mark.usefixtures("utc")

DPO = {"method": {"objective": "dpo", "beta": 0.1},
       "data": {"source": "sample:contacts-json-pref.jsonl", "format": "preference"}}


def rewards(chosen: float, rejected: float, acc: float) -> dict:
    return {"rewards/chosen": chosen, "rewards/rejected": rejected, "rewards/margins": round(chosen - rejected, 4),
            "rewards/accuracies": acc}


def write_run(folder: Path, config: dict, events: list[dict], state: str = "finished") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    RunConfig.model_validate(config).save(folder / "config.yaml")
    t = 1_000.0
    lines = [{"kind": "started", "time": t, "max_steps": 12, "model": "smollm2-135m-instruct", "method": "lora"}]
    lines += [{"time": t + 10 * (i + 1), **e} for i, e in enumerate(events)]
    (folder / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (folder / "status.json").write_text(json.dumps({"state": state, "started": t, "ended": lines[-1]["time"]}))
    return folder


def dpo_run(runs: Path, name: str = "demo-dpo", held_out: bool = True) -> Path:
    """12 steps of DPO: rewards on the steps, and on held-out pairs at steps 0 (the base: all zero), 6 and 12."""
    steps = [{"kind": "step", "step": s, "max_steps": 12, "loss": 0.69 - 0.05 * s, **rewards(0.02 * s, -0.1 * s, 0.5 + s / 30)}
             for s in (2, 4, 6, 8, 10, 12)]
    evals = [{"kind": "eval", "step": 0, "eval_loss": 0.6931, **rewards(0.0, 0.0, 0.0)},
             {"kind": "eval", "step": 6, "eval_loss": 0.41, **rewards(0.05, -1.9, 0.95)},
             {"kind": "eval", "step": 12, "eval_loss": 0.45, **rewards(0.12, -1.6, 0.9)}] if held_out else []
    events = steps[:3] + evals[:2] + steps[3:] + evals[2:] + [{"kind": "finished", "step": 12, "train_loss": 0.4}]
    return write_run(runs / name, {**DPO, "output": {"name": name}}, events)


def sft_run(runs: Path, name: str = "demo-sft") -> Path:
    events = [{"kind": "step", "step": s, "max_steps": 12, "loss": 1.0 / s} for s in (2, 4, 6, 8, 10, 12)]
    events += [{"kind": "eval", "step": 12, "eval_loss": 0.09}, {"kind": "finished", "step": 12, "train_loss": 0.2}]
    return write_run(runs / name, {"output": {"name": name}}, events)


def test_reward_rows_final_best_and_where_they_come_from(tmp_path):
    runs = tmp_path / "runs"
    rows = compare.read_runs([sft_run(runs), dpo_run(runs), dpo_run(runs, "steps-only", held_out=False)])
    cells = dict(compare.table_rows(rows))
    assert cells["method"] == ["lora", "lora·dpo", "lora·dpo"]  # as Runs and `loratui runs` name them
    assert cells["rewards of"] == ["-", "held-out pairs", "train steps"]
    assert cells["chosen/rejected"] == ["-", "+0.120/-1.600", "+0.240/-1.200"]  # the last evaluation's, else step's
    assert cells["final margin"] == ["-", "+1.720", "+1.440"]
    assert cells["best margin"] == ["-", "+1.950", "-"]  # held-out only, the base's step 0 never counts
    assert cells["final pref acc"] == ["-", "0.90", "0.90"] and cells["best pref acc"] == ["-", "0.95", "-"]
    # a DPO loss is not an SFT loss: the cell says which (a QA walk read 0.0540 against 0.3836 as one quantity)
    final = next(v for k, v in cells.items() if k.startswith("final eval loss") or k.endswith("so far"))
    assert final[1].split()[1] == "dpo" and len(final[0].split()) == 1, final
    labels = [label for label, _ in compare.table_rows(rows)]
    assert labels.index("best eval loss") < labels.index("rewards of") < labels.index("active time")
    for label, _ in compare.REWARD_FIELDS:  # the field column is 18 wide, a run's 16
        assert len(label) <= 18 and all(len(c) <= 16 for c in cells[label]), (label, cells[label])
    assert "| final margin | - | +1.720 | +1.440 |" in compare.to_markdown(rows)  # `loratui study` prints this
    table = list(csv.DictReader(compare.to_csv(rows).splitlines()))
    assert (table[0]["margin"], table[1]["margin"], table[1]["best_pref_accuracy"]) == ("", "1.72", "0.95")
    assert table[1]["objective"] == "dpo" and table[1]["rewards_from"] == "held-out"
    # SFT runs alone: no reward rows at all
    assert "final margin" not in dict(compare.table_rows(rows[:1]))


async def test_compare_screen_shows_rewards_beside_an_sft_run_at_80_columns(tmp_path):
    runs = tmp_path / "runs"
    paths = [sft_run(runs), dpo_run(runs)]
    app = host_app(lambda: CompareScreen(runs=paths), runs_dir=runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="compare")
        table = screen.query_one(DataTable)
        table.move_cursor(row=[str(k.value) for k in table.rows].index("best pref acc"))
        await pilot.pause()
        lines = screen_text(app).splitlines()
        row = {ln.split()[0] + " " + ln.split()[1]: ln for ln in lines if len(ln.split()) > 2}
        assert row["final margin"].split()[2:4] == ["-", "+1.720"], lines
        assert row["best pref"].split()[3:5] == ["-", "0.95"], "\n".join(lines)
        assert "chosen/rejected" in screen_text(app) and "+0.120/-1.600" in screen_text(app)
        assert max(len(ln.rstrip()) for ln in lines) <= 80
