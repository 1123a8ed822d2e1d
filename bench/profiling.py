"""A Trainer callback that traces a few optimizer steps with torch.profiler and prints where the time goes.

Used by bench/seed_recipe.py --profile and bench/profile_loratui.py (bench only: the engine carries no probes).
"""

from __future__ import annotations

import json
import os
import re
import time

import torch
from transformers import TrainerCallback

import gaps


SHAPES = os.environ.get("PROFILE_SHAPES") == "1"  # per-shape matmul table (time, TFLOP/s); adds host time
KINDS = [  # first match wins: kernel name pattern -> kind
    ("gemm", r"gemm|nvjet|cutlass|xmma|cublas|sm90_|sm80_|Kernel2"), ("attention", r"flash|fmha|attn"),
    ("cross_entropy", r"cross_entropy"), ("norm", r"rms|norm"), ("swiglu", r"swiglu|silu|geglu"),
    ("rope", r"rope|rotary"), ("dropout", r"dropout|bernoulli"), ("optimizer", r"adam|foreach|multi_tensor"),
    ("copy_cast", r"copy|Memcpy|Memset|cat_|CatArray|to_copy|fill"), ("reduce", r"reduce|sum"),
    ("elementwise", r"elementwise|vectorized|unrolled|triton"),
]


def by_kind(kernels, steps: int) -> dict:
    """GPU ms a step per kind of kernel (matmuls, attention, norms, copies ...), largest first."""
    out: dict[str, float] = {}
    for e in kernels:
        kind = next((k for k, pat in KINDS if re.search(pat, e.name, re.I)), "other")
        out[kind] = out.get(kind, 0.0) + e.device_time / 1e3 / steps
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def gemm_table(prof, steps: int) -> str:
    """Each matmul shape's GPU ms a step and TFLOP/s (leaf aten ops only, so no time is counted twice)."""
    rows = []
    for e in prof.key_averages(group_by_input_shape=True):
        if e.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm") and e.device_time_total:
            ms = e.device_time_total / 1e3 / steps
            tflops = (e.flops / steps) / (ms / 1e3) / 1e12 if e.flops else 0.0
            rows.append((ms, e.key, str(e.input_shapes), e.count // steps, tflops))
    rows.sort(reverse=True)
    lines = [f"{ms:8.2f} ms  x{n:<4} {tf:6.0f} TFLOP/s  {key} {shapes}" for ms, key, shapes, n, tf in rows[:40]]
    total = sum(r[0] for r in rows)
    return f"matmuls: {total:.1f} ms a step\n" + "\n".join(lines)


class StepProfiler(TrainerCallback):
    """Traces ``steps`` optimizer steps from step ``start`` twice: first the card alone (CUDA activity only: gaps
    between kernels as they are, no host tracing cost), then host and card (what the host did in each gap, at some
    cost to the host's pace). Each phase writes its gap report (bench/gaps.py) under $OUT."""

    PHASES = (("card", (torch.profiler.ProfilerActivity.CUDA if torch.cuda.is_available()
                        else torch.profiler.ProfilerActivity.CPU,)),  # a CPU smoke run of this script
              ("host", (torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA)))

    def __init__(self, label: str, start: int = 20, steps: int = 3):
        self.label, self.start, self.steps = label, start, steps
        self.prof = None
        self.phase = 0
        self.t0 = 0.0

    def on_step_begin(self, args, state, control, **kw):
        if self.prof is None and self.phase < len(self.PHASES) and \
                state.global_step == self.start + self.phase * self.steps:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            host = self.PHASES[self.phase][0] == "host"
            self.prof = torch.profiler.profile(activities=list(self.PHASES[self.phase][1]),
                                               record_shapes=SHAPES and host, with_flops=SHAPES and host)
            self.prof.__enter__()
            self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self.prof is None or state.global_step != self.start + (self.phase + 1) * self.steps:
            return
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        wall = (time.perf_counter() - self.t0) / self.steps
        self.prof.__exit__(None, None, None)
        name = self.PHASES[self.phase][0]
        out = os.environ.get("OUT")
        trace = f"/tmp/trace-{self.label}-{name}.json"
        self.prof.export_chrome_trace(trace)
        with open(trace) as fh:
            rep = gaps.report(json.load(fh), self.steps)
        rep = {"label": self.label, "phase": name, "wall_ms_per_step": round(wall * 1e3, 1), **rep}
        print("PROFILE_GAPS " + json.dumps({k: v for k, v in rep.items() if k not in ("sites", "blocking", "host_in_gaps")}),
              flush=True)
        if out:
            with open(os.path.join(out, f"gaps-{self.label}-{name}.txt"), "w") as fh:
                fh.write(f"wall {rep['wall_ms_per_step']} ms a step\n" + gaps.format_report(rep) + "\n")
        if name == "host":
            self.summary(wall, out)
        self.prof, self.phase = None, self.phase + 1

    def summary(self, wall: float, out: str | None) -> None:
        events = self.prof.events()
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu_us = sum(e.device_time for e in kernels) / self.steps  # overlapping streams counted twice: rare here
        table = self.prof.key_averages().table(sort_by="device_time_total", row_limit=25, max_name_column_width=60)
        summary = {"label": self.label, "wall_ms_per_step": round(wall * 1e3, 1),
                   "gpu_kernel_ms_per_step": round(gpu_us / 1e3, 1),
                   "gpu_busy": round(gpu_us / 1e6 / wall, 3),
                   "kernels_per_step": round(len(kernels) / self.steps)}
        summary["kernel_ms_by_kind"] = by_kind(kernels, self.steps)
        print("PROFILE " + json.dumps(summary), flush=True)
        gemms = gemm_table(self.prof, self.steps) if SHAPES else ""
        if out:
            with open(os.path.join(out, f"profile-{self.label}.txt"), "w") as fh:
                fh.write(json.dumps(summary) + "\n" + table + "\n" + gemms)


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
