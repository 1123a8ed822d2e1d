"""Several processes for one run: ``loratui engine RUN --nproc N`` starts torchrun and stands for the run.

```
loratui engine RUN --nproc N           the run's process (status.json's pid; its own session when detached)
  └─ python -m torch.distributed.run   torchrun: rendezvous, one worker a card, kills the rest when one dies
       ├─ loratui engine RUN  rank 0   writes events, status, checkpoints' metadata, the adapter
       └─ loratui engine RUN  rank 1…  train, save their shards, write nothing else (their errors: ranks/)
```
Stop, checkpoint-now and SIGINT are forwarded to every rank (the ranks then agree on the step through the process
group); a hang-up is ignored like the single engine does. When torchrun ends badly and rank 0 could not say why,
this process writes the ``failed`` event naming the rank and its one-line cause, so a run is never left ``running``.
Light module: no torch here (torchrun runs in its own process).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from loratui.core.protocol import EventWriter
from loratui.core.runs import RunDir, last_lifecycle

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def torchrun_command(run: RunDir, processes: int, *, resume: bool = False, nodes: int = 1,
                     endpoint: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={processes}", f"--nnodes={nodes}"]
    if nodes > 1:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run.name}"]
    else:
        cmd += ["--standalone"]
    cmd += ["--max-restarts=0", "-m", "loratui", "engine", str(run.path)]
    return cmd + (["--resume"] if resume else [])


def other_node_command(run: RunDir, processes: int, nodes: int, endpoint: str) -> str:
    """What to run on every other node (the run folder must be on a filesystem all nodes share)."""
    return " ".join(torchrun_command(run, processes, nodes=nodes, endpoint=endpoint)).replace(sys.executable, "python")


def workers(root: int) -> list[psutil.Process]:
    """The engine ranks under torchrun (not torchrun itself, not their dataloader or compile workers)."""
    try:
        kids = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return []
    out = []
    for p in kids:
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "engine" in cmd and any("loratui" in c for c in cmd) and "torch.distributed.run" not in cmd:
            out.append(p)
    return [p for p in out if p.ppid() not in {q.pid for q in out}]


def supervise(run: RunDir, processes: int, *, resume: bool = False, nodes: int = 1, endpoint: str | None = None,
              env: dict | None = None) -> int:
    """Run torchrun for ``run`` and wait; returns its exit code. Forwards stop/checkpoint signals to the ranks."""
    from loratui.core.identity import RunBusy, RunLock

    try:  # this process stands for the run: it holds the run's lock for every rank
        lock = RunLock.adopt(run.path)
    except RunBusy:
        if nodes <= 1:
            raise
        lock = None  # several nodes on one shared run folder: another node's supervisor holds it
    cmd = torchrun_command(run, processes, resume=resume, nodes=nodes, endpoint=endpoint)
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {}), "LORATUI_SUPERVISOR_PID": str(os.getpid()),
                                      "PYTHONUNBUFFERED": "1"})

    def forward(signum, frame):
        for w in workers(proc.pid):
            try:
                w.send_signal(signum)
            except psutil.Error:
                pass

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except InterruptedError:  # pragma: no cover - Python retries waits itself
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if rc != 0:
        record_failure(run, rc)
    if lock is not None:
        lock.release()
    return rc


_ROOT_CAUSE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


def rank_failure(run: RunDir) -> dict | None:
    """The rank that failed first and why.

    A rank killed by a signal (SIGKILL: the kernel's OOM killer, a user) leaves no report of its own; the others
    then fail in a collective ("connection reset by peer") and report that. So torchrun's root cause wins when it
    is a rank that died without a report; otherwise the earliest report in ranks/rank-N.json."""
    reports = {}
    for path in sorted((run.path / "ranks").glob("rank-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("rank"), int):
            reports[data["rank"]] = data
    found = _ROOT_CAUSE.findall("\n".join(run.log_tail(400)))
    dead = [(int(r), int(code)) for r, code in found if int(r) not in reports]
    if dead:
        rank, code = dead[0]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.Signals._value2member_map_ \
            else f"ended with exit code {code}"
        return {"rank": rank, "error": "RankDied",
                "message": f"rank {rank} {how} without saying why (out of host memory, or killed from outside)"}
    if reports:
        return min(reports.values(), key=lambda r: (r.get("time") or 0, r["rank"]))
    return None


def record_failure(run: RunDir, rc: int) -> None:
    """After torchrun failed: a ``failed`` event naming the rank, unless rank 0 already said why (and was the root
    cause), and status ``failed``."""
    events = run.events()
    cause = rank_failure(run)
    last = last_lifecycle(events)
    if last == "failed" and (cause is None or cause.get("rank") == 0):
        return
    if cause is None:
        cause = {"rank": None, "error": "TorchrunFailed",
                 "message": f"torchrun ended with exit code {rc} before any rank reported an error"}
    rank = cause.get("rank")
    message = cause["message"] if str(cause["message"]).startswith("rank ") else \
        f"rank {rank}: {cause['message']}" if rank is not None else cause["message"]
    step = max((e.get("step") or 0 for e in events if e.get("kind") == "step"), default=0)
    writer = EventWriter(run.events_path)
    try:
        writer.emit("failed", step=step, error=str(cause.get("error") or "RankFailed"), message=message,
                    hint="see engine.log for every rank's output; resume from the last checkpoint with: "
                         f"loratui train --resume {run.path}", field=None, rank=rank)
    finally:
        writer.close()
    run.write_status(state="failed", ended=round(time.time(), 3), error=message)
    print(f"failed: {message}", file=sys.stderr, flush=True)

