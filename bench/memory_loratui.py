"""Where a loratui run's GPU memory goes (the real engine, in this process; bench only: the engine carries no probes).

Usage: python bench/memory_loratui.py CONFIG.yaml   (a fresh run folder "<name>-memory"; prints MEMORY lines)
MEMORY_START=N records steps N+1..N+2 (default 30) with torch's allocator history and prints: what the card holds
outside torch (NVML minus reserved: the CUDA context), the reserved memory by pool (the CUDA graphs' pool apart), the
static tensors by kind (4-bit weights, other frozen weights, adapters, their gradients, optimizer states), the peak
allocated in the window and which allocations made in the window were alive at that peak, by the first frames
outside torch that made them.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from pathlib import Path

import torch
from transformers import TrainerCallback

from loratui.core.config import load_config
from loratui.core.runs import create_run
from loratui.train import engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profiling import add_engine_callback  # noqa: E402

GiB = 2**30


def nvml_used() -> float:
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        return sum(p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)
                   if p.pid == os.getpid()) / GiB
    except Exception:  # noqa: BLE001
        return float("nan")


def tensor_bytes(t) -> int:
    return t.numel() * t.element_size() if torch.is_tensor(t) and t.is_cuda else 0


def statics(model, optimizer) -> dict:
    out = collections.Counter()
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        kind = ("4-bit weights" if type(p).__name__ == "Params4bit" else "adapters" if p.requires_grad
                else "embeddings" if "embed" in name else "head" if "lm_head" in name else "other frozen")
        out[kind] += tensor_bytes(p)
        qs = getattr(p, "quant_state", None)
        if qs is not None:
            for t in (qs.absmax, getattr(qs, "code", None), getattr(getattr(qs, "state2", None), "absmax", None)):
                out["4-bit constants"] += tensor_bytes(t)
        if p.grad is not None:
            out["adapter grads"] += tensor_bytes(p.grad)
    for b in model.buffers():
        out["buffers"] += tensor_bytes(b)
    inner = getattr(optimizer, "optimizer", optimizer)
    for state in getattr(inner, "state", {}).values():
        for v in state.values():
            out["optimizer states"] += tensor_bytes(v)
    return {k: round(v / GiB, 3) for k, v in out.items()}


def where(frames) -> str:
    keep = [f for f in frames if "/torch/" not in f["filename"] and "<" not in f["filename"]]
    return " < ".join(f"{Path(f['filename']).name}:{f['line']}:{f['name']}" for f in keep[:3]) or "(torch)"


def window_peak(trace, start_allocated: int) -> tuple[int, dict]:
    live, now, peak, at_peak = {}, start_allocated, start_allocated, {}
    for e in trace:
        if e["action"] == "alloc":
            live[e["addr"]] = e
            now += e["size"]
            if now > peak:
                peak, at_peak = now, dict(live)
        elif e["action"] == "free_requested" and e["addr"] in live:
            now -= live.pop(e["addr"])["size"]
    groups = collections.Counter()
    for e in at_peak.values():
        groups[where(e.get("frames", []))] += e["size"]
    return peak, groups


class MemoryProbe(TrainerCallback):
    def __init__(self, start: int):
        self.start, self.started_at = start, 0

    def on_step_begin(self, args, state, control, **kw):
        if state.global_step == self.start:
            torch.cuda.synchronize()
            self.before = torch.cuda.max_memory_reserved()  # the run so far: loading, every capture
            torch.cuda.reset_peak_memory_stats()
            self.started_at = torch.cuda.memory_allocated()
            torch.cuda.memory._record_memory_history(enabled="all", context="all", stacks="python",
                                                     max_entries=400_000)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        if state.global_step != self.start + 2:
            return
        torch.cuda.synchronize()
        snap = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        reserved = torch.cuda.memory_reserved()
        pools = collections.Counter()
        for seg in snap["segments"]:
            pool = tuple(seg.get("segment_pool_id", (0, 0)))
            name = "default" if pool == (0, 0) else f"private {pool}"
            pools[f"{name} stream {seg.get('stream', 0)}"] += seg["total_size"]
            pools[f"{name} stream {seg.get('stream', 0)} allocated"] += seg.get("allocated_size", 0)
        trace = [e for dev in snap["device_traces"] for e in dev]
        peak, groups = window_peak(trace, self.started_at)
        report = {
            "nvml_gib": round(nvml_used(), 3), "reserved_gib": round(reserved / GiB, 3),
            "outside_torch_gib": round(nvml_used() - reserved / GiB, 3),
            "max_reserved_gib": round(torch.cuda.max_memory_reserved() / GiB, 3),
            "max_reserved_before_window_gib": round(self.before / GiB, 3),
            "max_allocated_gib": round(torch.cuda.max_memory_allocated() / GiB, 3),
            "allocated_before_window_gib": round(self.started_at / GiB, 3),
            "trace_peak_gib": round(peak / GiB, 3), "trace_events": len(trace),
            "pools_gib": {k: round(v / GiB, 3) for k, v in pools.items()},
            "statics_gib": statics(model, optimizer),
        }
        print("MEMORY " + json.dumps(report), flush=True)
        for name, size in groups.most_common(18):
            print(f"MEMORY live-at-peak {size / GiB:7.3f} GiB  {name}", flush=True)


def old_warmups() -> None:
    """MEMORY_OLD_WARMUP=1: the checkpointed graphs' warm-ups as before round 9 (in the card's default pool, the
    capture on torch's own capture stream), for an A/B in one call."""
    from loratui.train import graphs_ckpt

    def cuda_capture(pool, side):
        def capture(fn):
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    fn()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                out = fn()

            def replay():
                graph.replay()
                return out

            return replay

        return capture

    graphs_ckpt.cuda_capture = cuda_capture


if __name__ == "__main__":
    if os.environ.get("MEMORY_OLD_WARMUP") == "1":
        old_warmups()
    add_engine_callback(lambda: MemoryProbe(int(os.environ.get("MEMORY_START", "30"))))
    cfg = load_config(sys.argv[1])
    cfg.output.name = (cfg.output.name or "run") + "-memory" + os.environ.get("MEMORY_OLD_WARMUP", "")
    cfg.train.max_steps = max(cfg.train.max_steps or 0, int(os.environ.get("MEMORY_START", "30")) + 3)
    raise SystemExit(engine.Engine(create_run(cfg)).run())
