"""Deterministic stand-ins for the heavy core, shared by the app/setup UI tests (no torch, fixed numbers)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from loratui.core.config import RunConfig
from loratui.train.estimate import MemoryRow
from loratui.ui.screens.setup import SetupScreen
from loratui.ui.widgets import setup_core

GIB = 1024**3
LAYERS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


ROWS = [  # the estimate's own rows (a light module: no torch at import), with fixed numbers
    MemoryRow("this config (lora)", int(0.25 * GIB), int(0.01 * GIB), int(0.02 * GIB), int(1.2 * GIB), int(0.5 * GIB)),
    MemoryRow("full fine-tuning", int(0.5 * GIB), int(0.5 * GIB), int(1.0 * GIB), int(1.4 * GIB), int(0.5 * GIB)),
    MemoryRow("QLoRA 4-bit", int(0.16 * GIB), int(0.01 * GIB), int(0.02 * GIB), int(1.2 * GIB), int(0.5 * GIB)),
]


def pinned_config() -> RunConfig:
    """A fixed config for tests and snapshots (independent of the sample files, which may change)."""
    return RunConfig.model_validate({
        "model": {"name": "smollm2-135m-instruct"},
        "lora": {"r": 8, "alpha": 16, "preset": "minimal-qv"},
        "data": {"source": "sample:contacts-json.jsonl", "format": "alpaca", "max_length": 128},
        "train": {"max_steps": 80, "batch_size": 8, "lr": 5e-4},
        "output": {"runs_dir": "runs"},
    })


class Calls:
    def __init__(self) -> None:
        self.launched: list = []
        self.preflight: list = []


@pytest.fixture
def fake_core(monkeypatch) -> Calls:
    """Fixed estimates, no GPU, the Llama layer names, no debounce; launch records instead of spawning."""
    calls = Calls()

    def count_params(cfg):
        trainable = 460_800 * cfg.lora.r // 8 if cfg.uses_lora else 134_515_008
        return SimpleNamespace(trainable=trainable, total=134_515_008 + trainable)

    monkeypatch.setattr(setup_core, "count_params", count_params)
    monkeypatch.setattr(setup_core, "estimate_memory", lambda cfg: SimpleNamespace(rows=list(ROWS)))
    monkeypatch.setattr(setup_core, "list_linear_layers", lambda cfg: list(LAYERS))
    monkeypatch.setattr(setup_core, "query_gpus", lambda: [])
    monkeypatch.setattr(setup_core, "preflight", lambda cfg: calls.preflight.append(cfg))

    def launch_detached(run):
        calls.launched.append(run)
        return 4242

    monkeypatch.setattr(setup_core, "launch_detached", launch_detached)
    monkeypatch.setattr(SetupScreen, "DEBOUNCE", 0)
    return calls


async def settle(pilot) -> None:
    """Let messages, timers and workers finish (instead of sleeping), and the Setup form finish mounting (its
    first frame holds only the first section)."""
    app = pilot.app
    setup = getattr(app, "mode_screens", {}).get("setup")
    for _ in range(500):
        if setup is None or not setup.is_mounted or setup.form_ready:
            break
        await pilot.pause(0.01)
    for _ in range(3):
        await pilot.pause()
        await app.workers.wait_for_complete()
    await pilot.pause()
