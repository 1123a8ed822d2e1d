"""Where the GPU waits: the gaps between kernels in a torch.profiler chrome trace, and what the host was doing.

The card runs one kernel after another on one stream; every microsecond between the end of one and the start of the
next is the card waiting on the host (a sync drained the queue, Python between launches, a host-side data step).
For each gap this finds the host call that launched the kernel after it (by the trace's correlation ids) and the
host ops that enclosed that launch, and sums the gaps by site. Host calls that block on the card (synchronize,
blocking copies, `.item()`) are listed with their own time: each one empties the queue.

Usage: python bench/gaps.py TRACE.json [--steps N]   (bench/profiling.py calls ``report`` after its traced steps)
"""

from __future__ import annotations

import argparse
import bisect
import json
from collections import defaultdict

GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATS = ("cpu_op", "user_annotation", "python_function")
BUCKETS = (5, 20, 100, 1000)  # microseconds: gap sizes are summed below each of these, and above the last
BLOCKING = ("Synchronize", "cudaMemcpy", "cudaMemcpyAsync", "cudaStreamWaitEvent", "cudaEventQuery")


def _by_thread(host: list[dict]) -> dict[int, list[dict]]:
    by_tid: dict[int, list[dict]] = defaultdict(list)
    for e in host:
        by_tid[e["tid"]].append(e)
    return by_tid


def _stacks(host: list[dict], queries: list[tuple[int, float]]) -> dict[tuple[int, float], list[str]]:
    """The names of the host ops enclosing each (thread, time) query, outermost first (ops nest per thread)."""
    by_tid = _by_thread(host)
    out: dict[tuple[int, float], list[str]] = {}
    wanted: dict[int, list[float]] = defaultdict(list)
    for tid, t in queries:
        wanted[tid].append(t)
    for tid, times in wanted.items():
        ops = sorted(by_tid.get(tid, []), key=lambda e: (e["ts"], -e.get("dur", 0)))
        stack: list[dict] = []
        i = 0
        for t in sorted(set(times)):
            while i < len(ops) and ops[i]["ts"] <= t:
                while stack and stack[-1]["ts"] + stack[-1].get("dur", 0) < ops[i]["ts"]:
                    stack.pop()
                stack.append(ops[i])
                i += 1
            live = [e for e in stack if e["ts"] + e.get("dur", 0) >= t]
            out[(tid, t)] = [e["name"] for e in live]
    return out


def _outermost(host: list[dict]) -> dict[int, list[dict]]:
    """Each thread's outermost host ops (those no other op encloses), by start."""
    out: dict[int, list[dict]] = defaultdict(list)
    for tid, ops in _by_thread(host).items():
        end = float("-inf")
        for e in sorted(ops, key=lambda e: (e["ts"], -e.get("dur", 0))):
            if e["ts"] >= end:
                out[tid].append(e)
                end = e["ts"] + e.get("dur", 0)
    return out


def _during(outer: dict[int, list[dict]], starts: list[float], tid: int, a: float, b: float) -> dict[str, float]:
    """Microseconds of [a, b] that each outermost op of thread ``tid`` covered (``starts``: their start times)."""
    ops = outer.get(tid, [])
    got: dict[str, float] = defaultdict(float)
    i = max(0, bisect.bisect_right(starts, a) - 1) if ops else 0
    while i < len(ops) and ops[i]["ts"] < b:
        e = ops[i]
        cover = min(b, e["ts"] + e.get("dur", 0)) - max(a, e["ts"])
        if cover > 0:
            got[e["name"]] += cover
        i += 1
    return got


def _short(name: str, n: int = 70) -> str:
    return name if len(name) <= n else name[: n - 1] + "~"


def report(trace: dict, steps: int, min_gap_us: float = 20.0, top: int = 25) -> dict:
    """Gap totals a step by size, the largest sites (the host stack that launched the kernel after each gap), and
    the host calls that blocked on the card."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X"]
    gpu = sorted((e for e in events if e.get("cat") in GPU_CATS), key=lambda e: e["ts"])
    if not gpu:
        return {"kernels": 0}
    runtime = {e["args"]["correlation"]: e for e in events
               if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    host = [e for e in events if e.get("cat") in HOST_CATS]
    span = gpu[-1]["ts"] + gpu[-1].get("dur", 0) - gpu[0]["ts"]
    gaps, busy, end = [], 0.0, gpu[0]["ts"]
    for prev, e in zip([None, *gpu[:-1]], gpu):
        start, stop = e["ts"], e["ts"] + e.get("dur", 0)
        if start > end and prev is not None:
            gaps.append((start - end, prev, e))
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    sizes = {f"<{b}us": 0.0 for b in BUCKETS} | {f">={BUCKETS[-1]}us": 0.0}
    counts = dict.fromkeys(sizes, 0)
    for g, _, _ in gaps:
        key = next((f"<{b}us" for b in BUCKETS if g < b), f">={BUCKETS[-1]}us")
        sizes[key] += g / 1e3 / steps
        counts[key] += 1
    big = [(g, p, e) for g, p, e in gaps if g >= min_gap_us]
    launches = {id(e): runtime.get(e.get("args", {}).get("correlation")) for _, _, e in big}
    queries = [(r["tid"], r["ts"]) for r in launches.values() if r is not None]
    stacks = _stacks(host, queries)
    sites: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0.0])
    outer = _outermost(host)
    starts = {tid: [e["ts"] for e in ops] for tid, ops in outer.items()}
    during: dict[str, float] = defaultdict(float)
    for g, prev, e in big:
        r = launches[id(e)]
        if r is not None and r["tid"] in starts:  # what the launching thread did while the card waited
            for name, us in _during(outer, starts[r["tid"]], r["tid"], e["ts"] - g, r["ts"]).items():
                during[name] += us / 1e3 / steps
        names = stacks.get((r["tid"], r["ts"]), []) if r is not None else []
        where = " > ".join(_short(n, 48) for n in ([*names[:2], *names[-2:]] if len(names) > 4 else names))
        key = f"{where or '(no host op)'}  ||  after {_short(prev['name'], 40)}"
        s = sites[key]
        s[0] += g / 1e3 / steps
        s[1] += 1
        s[2] = max(s[2], g / 1e3)
    blocking: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    blockers = [e for e in events if e.get("cat") == "cuda_runtime" and any(b in e["name"] for b in BLOCKING)
                and e.get("dur", 0) >= min_gap_us]
    bstacks = _stacks(host, [(e["tid"], e["ts"]) for e in blockers])
    for e in blockers:
        names = bstacks.get((e["tid"], e["ts"]), [])
        key = f"{e['name']}  in  " + " > ".join(_short(n, 48) for n in names[-3:])
        blocking[key][0] += e["dur"] / 1e3 / steps
        blocking[key][1] += 1
    return {
        "kernels_per_step": round(len(gpu) / steps),
        "span_ms_per_step": round(span / 1e3 / steps, 2),
        "busy_ms_per_step": round(busy / 1e3 / steps, 2),
        "gap_ms_per_step_by_size": {k: round(v, 2) for k, v in sizes.items()},
        "gaps_per_step_by_size": {k: round(v / steps, 1) for k, v in counts.items()},
        "sites": [{"ms_per_step": round(v[0], 3), "count": v[1], "max_ms": round(v[2], 3), "site": k}
                  for k, v in sorted(sites.items(), key=lambda kv: -kv[1][0])[:top]],
        "host_in_gaps": [{"ms_per_step": round(v, 3), "op": _short(k, 90)}
                         for k, v in sorted(during.items(), key=lambda kv: -kv[1])[:top]],
        "blocking": [{"ms_per_step": round(v[0], 3), "count": v[1], "call": k}
                     for k, v in sorted(blocking.items(), key=lambda kv: -kv[1][0])[:12]],
    }


def format_report(rep: dict) -> str:
    if not rep.get("kernels_per_step"):
        return "no GPU events in the trace"
    lines = [f"span {rep['span_ms_per_step']} ms a step, kernels busy {rep['busy_ms_per_step']} ms, "
             f"{rep['kernels_per_step']} kernels a step",
             "gaps (ms a step): " + ", ".join(f"{k} {v}" for k, v in rep["gap_ms_per_step_by_size"].items()),
             "gaps (count a step): " + ", ".join(f"{k} {v}" for k, v in rep["gaps_per_step_by_size"].items()),
             "largest gap sites (ms a step, count over the trace, largest gap ms; the host stack at the launch "
             "after the gap || the kernel before it):"]
    lines += [f"  {s['ms_per_step']:8.3f} {s['count']:6d} {s['max_ms']:8.3f}  {s['site']}" for s in rep["sites"]]
    lines.append("what the launching thread ran while the card waited (outermost host ops, ms a step):")
    lines += [f"  {h['ms_per_step']:8.3f}  {h['op']}" for h in rep["host_in_gaps"]]
    lines.append("host calls that waited on the card (ms a step, count):")
    lines += [f"  {b['ms_per_step']:8.3f} {b['count']:6d}  {b['call']}" for b in rep["blocking"]]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--steps", type=int, default=1)
    args = ap.parse_args()
    with open(args.trace) as fh:
        print(format_report(report(json.load(fh), args.steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
