"""Evaluation metrics shipped inside the package, so that no hub access is needed.

``evaluate.load("accuracy")`` downloads the metric script from the Hugging Face hub; loratui runs on machines that
may have no network, so the two metrics it uses live here as evaluate metric modules and are loaded by path.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
AVAILABLE = ("accuracy", "f1")


def metric_path(name: str) -> Path:
    """Path of the shipped metric module ``<name>/<name>.py``."""
    if name not in AVAILABLE:
        raise ValueError(f"unknown metric {name!r} (shipped: {', '.join(AVAILABLE)})")
    return METRICS_DIR / name / f"{name}.py"


def load_metric(name: str, config_name: str | None = None):
    """``evaluate.load`` on the shipped module: works offline (HF_HUB_OFFLINE=1)."""
    import evaluate  # heavy: imported only when a metric is needed

    return evaluate.load(str(metric_path(name)), config_name)
