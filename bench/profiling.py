"""A Trainer callback that traces a few optimizer steps with torch.profiler and prints where the time goes.

Used by bench/seed_recipe.py --profile and bench/profile_loratui.py (bench only: the engine carries no probes).
"""

from __future__ import annotations

import json
import os
import time

import torch
from transformers import TrainerCallback


class StepProfiler(TrainerCallback):
    def __init__(self, label: str, start: int = 20, steps: int = 5):
        self.label, self.start, self.steps = label, start, steps
        self.prof = None
        self.t0 = 0.0

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.start and self.prof is None:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            self.prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
            self.prof.__enter__()
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.prof is not None and state.global_step == self.start + self.steps:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            wall = (time.perf_counter() - self.t0) / self.steps
            self.prof.__exit__(None, None, None)
            events = self.prof.events()
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            gpu_us = sum(e.device_time for e in kernels) / self.steps  # overlapping streams counted twice: rare here
            table = self.prof.key_averages().table(sort_by="device_time_total", row_limit=25, max_name_column_width=60)
            summary = {"label": self.label, "wall_ms_per_step": round(wall * 1e3, 1),
                       "gpu_kernel_ms_per_step": round(gpu_us / 1e3, 1),
                       "gpu_busy": round(gpu_us / 1e6 / wall, 3),
                       "kernels_per_step": round(len(kernels) / self.steps)}
            print("PROFILE " + json.dumps(summary), flush=True)
            out = os.environ.get("OUT")
            if out:
                with open(os.path.join(out, f"profile-{self.label}.txt"), "w") as fh:
                    fh.write(json.dumps(summary) + "\n" + table)
            self.prof = None


def add_engine_callback(make_callback) -> None:
    """Every Trainer the engine makes in this process gets ``make_callback()`` (bench/profile_loratui.py,
    bench/memory_loratui.py: the real engine in-process, with a probe the engine itself does not carry)."""
    from loratui.train import recipe

    make = recipe.token_counting_trainer

    def trainer():
        base = make()

        class WithCallback(base):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self.add_callback(make_callback())

        return WithCallback

    recipe.token_counting_trainer = trainer
