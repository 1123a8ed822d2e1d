"""Trace a few steps of a loratui run (the real engine, in this process) with bench/profiling.py's callback.

Usage: python bench/profile_loratui.py CONFIG.yaml   (a fresh run folder from the config; prints PROFILE lines)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profiling import StepProfiler  # noqa: E402

from loratui.core.config import load_config  # noqa: E402
from loratui.core.runs import create_run  # noqa: E402
from loratui.train import engine  # noqa: E402

make = engine.token_counting_trainer


def profiled_trainer():
    base = make()

    class Profiled(base):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(StepProfiler(f"loratui-{Path(sys.argv[1]).stem}"))

    return Profiled


engine.token_counting_trainer = profiled_trainer
cfg = load_config(sys.argv[1])
cfg.output.name = (cfg.output.name or "run") + "-profile"
raise SystemExit(engine.Engine(create_run(cfg)).run())
