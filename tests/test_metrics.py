"""The shipped metric modules load with no hub access and compute the scikit-learn values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from loratui.train.metrics import AVAILABLE, load_metric, metric_path

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)


def test_modules_are_shipped_files():
    for name in AVAILABLE:
        assert metric_path(name).is_file()
    with pytest.raises(ValueError, match="shipped: accuracy, f1"):
        metric_path("bleu")


def test_load_offline_in_a_fresh_process_with_an_empty_cache(tmp_path):
    """A user on an air-gapped box: empty HF cache, offline flags set, metrics still load and compute."""
    code = (
        "import json\n"
        "from loratui.train.metrics import load_metric\n"
        "acc = load_metric('accuracy').compute(references=[0, 1, 2, 0, 1, 2], predictions=[0, 1, 1, 2, 1, 0])\n"
        "f1 = load_metric('f1').compute(references=[0, 1, 0, 1, 0], predictions=[0, 0, 1, 1, 0])\n"
        "print(json.dumps({**acc, **f1}))\n"
    )
    env = {**os.environ, **OFFLINE, "HF_HOME": str(tmp_path / "hf"), "HF_MODULES_CACHE": str(tmp_path / "mods"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"accuracy": 0.5, "f1": 0.5}


def test_accuracy_values():
    metric = load_metric("accuracy")
    refs, preds = [0, 1, 2, 0, 1, 2], [0, 1, 1, 2, 1, 0]
    assert metric.compute(references=refs, predictions=preds) == {"accuracy": 0.5}
    assert metric.compute(references=refs, predictions=preds, normalize=False) == {"accuracy": 3.0}
    weighted = metric.compute(references=refs, predictions=preds, sample_weight=[0.5, 2, 0.7, 0.5, 9, 0.4])
    assert weighted["accuracy"] == pytest.approx(0.8778625954198473)


def test_f1_binary_and_macro_three_classes():
    metric = load_metric("f1")
    assert metric.compute(references=[0, 1, 0, 1, 0], predictions=[0, 0, 1, 1, 0]) == {"f1": 0.5}
    assert metric.compute(references=[0, 1, 0, 1, 0], predictions=[0, 0, 1, 1, 0], pos_label=0)["f1"] == \
        pytest.approx(2 / 3)
    refs, preds = [0, 1, 2, 0, 1, 2], [0, 2, 1, 0, 0, 1]
    # class 0: P=2/3 R=1 -> F1=0.8; classes 1 and 2: never right -> 0; macro = 0.8/3
    assert metric.compute(references=refs, predictions=preds, average="macro")["f1"] == pytest.approx(0.8 / 3)
    assert metric.compute(references=refs, predictions=preds, average="micro")["f1"] == pytest.approx(1 / 3)
    per_class = metric.compute(references=refs, predictions=preds, average=None)["f1"]
    assert list(per_class) == pytest.approx([0.8, 0.0, 0.0])
    # a perfect 3-class prediction
    assert metric.compute(references=[0, 1, 2], predictions=[0, 1, 2], average="macro") == {"f1": 1.0}


def test_f1_multilabel_config():
    metric = load_metric("f1", "multilabel")
    out = metric.compute(predictions=[[0, 1, 1], [1, 1, 0]], references=[[0, 1, 1], [0, 1, 0]], average="macro")
    assert out["f1"] == pytest.approx(2 / 3)


def test_results_are_plain_floats_for_json_events():
    """The engine writes these into events.jsonl: they must be JSON-serialisable floats, not numpy scalars."""
    acc = load_metric("accuracy").compute(references=[1, 0], predictions=[1, 1])
    f1 = load_metric("f1").compute(references=[1, 0], predictions=[1, 1], average="macro")
    assert type(acc["accuracy"]) is float and type(f1["f1"]) is float
    json.dumps({**acc, **f1})
