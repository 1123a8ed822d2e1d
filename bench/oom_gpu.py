"""A real CUDA out-of-memory in the middle of a run, then the one-key retry (issue 8), on the lent GPU.

A LoRA run on the Llama-3.2-1B shape (`loratui train CONFIG`, the real engine path) checkpoints at step 5; then
another process takes the card's free memory, as a colleague's job starting on a shared card would. The run's next
allocation beyond what it already holds fails (a longer packed step, or the evaluation's full logits at step 10):
the bench records the engine's `failed` event. The other process ends, and `loratui.core.retry.retry_after_oom`
(what the Monitor's `b` does) halves the micro-batch, doubles the accumulation and resumes from the newest complete
checkpoint; the bench waits for the run to finish and prints the events that tell the story.

    python bench/oom_gpu.py --steps 60 --batch 32
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_engine import workspace  # noqa: E402
from speed import loratui_config, run_events  # noqa: E402

HOG = """
import sys, time, torch
torch.cuda.init(); torch.empty(1, device="cuda")  # CUDA ready before the run starts: it takes seconds
print("hog ready", flush=True)
sys.stdin.readline()  # go
free, total = torch.cuda.mem_get_info()
keep = int(float(sys.argv[1]) * 2**30)
x = torch.empty(max(free - keep, 0), dtype=torch.uint8, device="cuda")
print(f"hog holds {x.numel() / 2**30:.1f} GiB; {keep / 2**30:.2f} GiB left free", flush=True)
time.sleep(900)
"""


def wait_for(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--leave-gib", type=float, default=0.25, help="free memory the other process leaves")
    ap.add_argument("--tokenizer", default=".gpu/tokenizer")
    args = ap.parse_args()
    out, work, model_dir, data = workspace("1b", args.tokenizer)
    runs = work / "oom-runs"
    cfg = loratui_config(SimpleNamespace(method="lora", steps=args.steps, batch=args.batch), model_dir, data, runs,
                         "oom", "default")
    cfg["data"]["validation_fraction"] = 0.02
    cfg["train"].update(save_steps=5, eval_steps=20, eval_on_start=False, logging_steps=1)
    cfg_path = work / "oom.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run_dir = runs / "oom"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    log = open(out / "oom-train.log", "w")
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(args.leave_gib)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    assert hog.stdout.readline().strip() == "hog ready"
    t0 = time.time()
    engine = subprocess.Popen([sys.executable, "-m", "loratui", "train", str(cfg_path)], stdout=log,
                              stderr=subprocess.STDOUT)
    wait_for(lambda: any(e["kind"] == "checkpoint" and e["step"] == 5 for e in run_events(run_dir)), 300,
             "checkpoint-5")
    hog.stdin.write("go\n")
    hog.stdin.flush()
    print(hog.stdout.readline().strip(), flush=True)
    rc = engine.wait(600)
    hog.kill()
    hog.wait()
    failed = [e for e in run_events(run_dir) if e["kind"] == "failed"]
    print(f"first attempt: exit {rc} after {time.time() - t0:.0f}s", flush=True)
    print(json.dumps(failed[-1] if failed else {"no failed event": True}, indent=1), flush=True)
    result = {"exit": rc, "failed": failed[-1] if failed else None}
    if failed and failed[-1].get("oom"):
        from loratui.core.retry import retry_after_oom
        from loratui.core.runs import RunDir

        run = RunDir(run_dir)
        before = len(run_events(run_dir))
        pid = retry_after_oom(run)
        print(f"retry: engine pid {pid}, config now batch {run.config().train.batch_size} x accum "
              f"{run.config().train.grad_accum}", flush=True)
        end = wait_for(lambda: [e for e in run_events(run_dir)[before:]
                                if e["kind"] in ("finished", "failed", "stopped")], 300, "the retried run to end")
        evs = run_events(run_dir)[before:]
        resumed = [e for e in evs if e["kind"] == "resumed"]
        steps = [e["step"] for e in evs if e["kind"] == "step"]
        result.update(resumed=resumed[-1] if resumed else None, end=end[-1], steps_logged=steps)
        print(json.dumps({"resumed": result["resumed"], "end": end[-1]}, indent=1))
    (out / "results-oom.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
