"""Trace a few steps of a loratui run (the real engine, in this process) with bench/profiling.py's callback.

Usage: python bench/profile_loratui.py CONFIG.yaml   (a fresh run folder from the config; prints PROFILE lines)
PROFILE_START=N traces steps N+1..N+5 (default 20); PROFILE_SAME_NAME=1 keeps the config's run name (bench/speed.py
--profile reads the run's events for its tokens/s as usual).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profiling import StepProfiler  # noqa: E402

from loratui.core.config import load_config  # noqa: E402
from loratui.core.runs import create_run  # noqa: E402
from loratui.train import engine, recipe  # noqa: E402

make = recipe.token_counting_trainer


def profiled_trainer():
    base = make()

    class Profiled(base):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.add_callback(StepProfiler(f"loratui-{Path(sys.argv[1]).stem}",
                                           start=int(os.environ.get("PROFILE_START", "20"))))

    return Profiled


recipe.token_counting_trainer = profiled_trainer
cfg = load_config(sys.argv[1])
if not os.environ.get("PROFILE_SAME_NAME"):
    cfg.output.name = (cfg.output.name or "run") + "-profile"
raise SystemExit(engine.Engine(create_run(cfg)).run())
