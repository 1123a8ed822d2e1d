"""Trace a few steps of a loratui run (the real engine, in this process) with bench/profiling.py's callback.

Usage: python bench/profile_loratui.py CONFIG.yaml [PATCH[+PATCH...]]   (a fresh run folder from the config; prints
PROFILE lines; PATCH as bench/patched_train.py takes)
PROFILE_START=N traces steps N+1..N+6 (default 20); PROFILE_SAME_NAME=1 keeps the config's run name (bench/speed.py
--profile reads the run's events for its tokens/s as usual).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profiling import StepProfiler, add_engine_callback  # noqa: E402

from loratui.core.config import load_config  # noqa: E402
from loratui.core.runs import create_run  # noqa: E402
from loratui.train import engine  # noqa: E402

add_engine_callback(lambda: StepProfiler(f"loratui-{Path(sys.argv[1]).stem}",
                                         start=int(os.environ.get("PROFILE_START", "20"))))
if len(sys.argv) > 2:
    from patched_train import apply

    for patch in sys.argv[2].split("+"):
        apply(patch)
cfg = load_config(sys.argv[1])
if not os.environ.get("PROFILE_SAME_NAME"):
    cfg.output.name = (cfg.output.name or "run") + "-profile"
raise SystemExit(engine.Engine(create_run(cfg)).run())
