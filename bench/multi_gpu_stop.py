"""Stop and resume once on several cards (bench/RESULTS.md): a detached run, `loratui stop` mid-way, resume to the end.

Usage (after bench/speed.py made /tmp/bench-work/llama-1b):  python bench/multi_gpu_stop.py --gpus 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import run_events  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--gpus", type=int, default=2)
ap.add_argument("--steps", type=int, default=60)
args = ap.parse_args()
work = Path("/tmp/bench-work")
cfg = {"model": {"name": str(work / "llama-1b")}, "lora": {"r": 8, "alpha": 16, "preset": "minimal-qv"},
       "data": {"source": str(work / "data.jsonl"), "format": "text", "max_length": 1024, "validation_fraction": 0.0},
       "train": {"max_steps": args.steps, "batch_size": 16, "logging_steps": 5, "save_steps": 1000, "gpus": args.gpus},
       "output": {"runs_dir": str(work / "stop-runs"), "name": f"stop-{args.gpus}"}}
path = work / "stop.yaml"
path.write_text(yaml.safe_dump(cfg))
run = Path(cfg["output"]["runs_dir"]) / cfg["output"]["name"]
loratui = [sys.executable, "-m", "loratui"]


def events():
    return run_events(run)


print(subprocess.run(loratui + ["train", str(path), "--detach"], capture_output=True, text=True).stdout, flush=True)
t = time.time()
while not any(e["kind"] == "step" and e["step"] >= 15 for e in events()) and time.time() - t < 180:
    time.sleep(0.5)
print(subprocess.run(loratui + ["stop", str(run)], capture_output=True, text=True).stdout, flush=True)
while not any(e["kind"] in ("stopped", "failed") for e in events()) and time.time() - t < 300:
    time.sleep(0.5)
stop = [e for e in events() if e["kind"] in ("stopped", "failed")][-1]
print("stop:", json.dumps({k: stop.get(k) for k in ("kind", "step", "message")}), flush=True)
res = subprocess.run(loratui + ["train", "--resume", str(run)], capture_output=True, text=True)
print("resume exit", res.returncode, res.stdout[-600:], res.stderr[-800:], flush=True)
ev = events()
started = [e for e in ev if e["kind"] == "started"]
print("result:", json.dumps({"world_size": [e.get("world_size") for e in started],
                             "resumed_at": [e.get("step") for e in ev if e["kind"] == "resumed"],
                             "end": [(e["kind"], e.get("step")) for e in ev if e["kind"] in ("stopped", "finished", "failed")]}))
