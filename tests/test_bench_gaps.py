"""bench/gaps.py, the gap report the GPU calls rely on: the card's idle time between kernels, attributed to the host
op that launched the next kernel, what the launching thread ran meanwhile, and the host calls that blocked."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import gaps  # noqa: E402


def trace() -> dict:
    ev = []

    def kernel(name, ts, dur, corr):
        ev.append({"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"correlation": corr},
                   "tid": 7, "pid": 0})

    def launch(ts, corr, name="cudaLaunchKernel", dur=2):
        ev.append({"ph": "X", "cat": "cuda_runtime", "name": name, "ts": ts, "dur": dur,
                   "args": {"correlation": corr}, "tid": 1, "pid": 1})

    def op(name, ts, dur):
        ev.append({"ph": "X", "cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "tid": 1, "pid": 1})

    op("Optimizer.step", 0, 50)
    launch(10, 1)
    kernel("adam", 12, 30, 1)  # ends at 42
    op("aten::item", 55, 200)
    launch(60, 9, "cudaStreamSynchronize", 150)  # the host waits on the card
    op("enumerate(DataLoader)", 260, 100)
    op("aten::mm", 370, 20)
    launch(375, 2)
    kernel("gemm", 380, 50, 2)  # 338 us after adam: the step boundary
    launch(400, 3)
    kernel("gemm2", 431, 40, 3)  # 1 us after gemm: back to back
    return {"traceEvents": ev}


def test_the_gap_before_a_kernel_is_charged_to_what_the_host_did():
    rep = gaps.report(trace(), steps=1)
    assert rep["busy_ms_per_step"] == 0.12 and rep["span_ms_per_step"] == 0.46
    assert rep["gap_ms_per_step_by_size"]["<1000us"] == 0.34 and rep["gaps_per_step_by_size"]["<5us"] == 1
    (site,) = rep["sites"]
    assert site["site"].startswith("aten::mm  ||  after adam") and site["count"] == 1 and site["ms_per_step"] == 0.338
    during = {h["op"]: h["ms_per_step"] for h in rep["host_in_gaps"]}
    assert during["aten::item"] == 0.2 and during["enumerate(DataLoader)"] == 0.1
    assert rep["blocking"][0]["call"].startswith("cudaStreamSynchronize  in  aten::item")
    assert "host calls that waited on the card" in gaps.format_report(rep)
