"""A preference config in the queue (issue 20): it can be queued (alone or as a study over objectives), and the
Queue's detail line and `loratui study`'s progress line show its loss and margin. Hand-written events, no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fixtures import host_app, screen_text, wait_until
from loratui.core.config import RunConfig
from loratui.core.queue import RunQueue
from loratui.core.study import parse_study
from test_app_compare_preference import DPO, dpo_run

pytestmark = pytest.mark.usefixtures("utc")


def test_a_study_over_objectives_leaves_dpos_own_keys_to_dpo(tmp_path):
    study = parse_study({"study": "pref", "config": DPO, "grid": {"method.objective": ["dpo", "orpo"],
                                                                 "method.loss_type": ["sigmoid", "ipo"]}})
    assert [(r.label, r.config.method.loss_type) for r in study.runs] == [
        ("dpo loss_type=sigmoid", "sigmoid"), ("dpo loss_type=ipo", "ipo"), ("orpo", "sigmoid")]
    entries = RunQueue(tmp_path / "runs").add_study(study)
    assert [e.run for e in entries] == ["pref-dpo-loss_typesigmoid", "pref-dpo-loss_typeipo", "pref-orpo"]


async def test_the_queue_shows_a_preference_runs_loss_and_margin(tmp_path, monkeypatch):
    from loratui.commands.queue import _progress_line
    from loratui.ui.screens.queue import QueueScreen

    monkeypatch.chdir(tmp_path)
    q = RunQueue(tmp_path / "runs")
    entry = q.add(RunConfig.model_validate({**DPO, "output": {"name": "demo-dpo"}}))
    dpo_run(q.runs_dir, entry.run)  # its engine's events, as a finished DPO run writes them
    data = json.loads(q.path.read_text())
    data["entries"][0].update(state="finished", started=1000.0, ended=1200.0)
    q.path.write_text(json.dumps(data))
    assert _progress_line(q.runs_dir / entry.run) == "step 12/12, loss 0.0900, eval loss 0.4500, margin +1.440"
    app = host_app(lambda: QueueScreen(), runs_dir=Path("runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until(pilot, lambda: screen.loaded, what="queue")
        text = screen_text(app)
        assert "loss 0.0900 · eval 0.4500 · margin +1.720 · pref acc 0.90 held-out" in text, text
        assert "demo-dpo" in text and "12/12 100%" in text  # the fold's progress, as `loratui runs` shows it
