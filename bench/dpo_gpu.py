"""DPO on the GPU (issue 20): the engine against TRL's DPOTrainer used as its docs show, in the same call.

Usage (on the lent GPU, wheels carried as bench/RESULTS.md says):
    python bench/dpo_gpu.py --shape 1b --steps 30 --batch 4 --methods lora,qlora,lora-8bit

Each engine run is `loratui train CONFIG` in its own process (the users' path): tokens/s is the median of its `step`
events after the first three, peak memory its `memory` events (torch max allocated). TRL's side: the same random-init
model loaded with from_pretrained (bf16), `peft_config=LoraConfig(...)`, `DPOConfig` with the same batch, steps,
learning rate and max_length and TRL's own defaults otherwise (its docs' recipe: gradient checkpointing on), in its
own process too; tokens/s from the same non-padding token count over the same steps. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_engine import SHAPES, WORDS, make_model  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def make_pairs(path: Path, n: int = 1200) -> None:
    """Synthetic pairs: a prompt of 60..200 words, answers of 40..250 words (the chosen and rejected differ)."""
    rng = random.Random(0)
    words = lambda a, b: " ".join(rng.choice(WORDS) for _ in range(rng.randint(a, b)))  # noqa: E731
    with open(path, "w") as fh:
        for _ in range(n):
            fh.write(json.dumps({"prompt": words(60, 200), "chosen": words(40, 250), "rejected": words(40, 250)})
                     + "\n")


def engine_run(method: str, model_dir: Path, data: Path, work: Path, args) -> dict:
    cfg = {"model": {"name": str(model_dir)}, "method": {"kind": method, "objective": "dpo"},
           "lora": {"r": 16, "alpha": 32, "target_modules": TARGETS, "dropout": 0.0},
           "data": {"source": str(data), "format": "preference", "validation_fraction": 0, "max_length": 1024},
           "train": {"max_steps": args.steps, "batch_size": args.batch, "lr": 5e-6, "logging_steps": 1,
                     "save_steps": 10_000, "eval_on_start": False},
           "output": {"runs_dir": str(work / "runs"), "name": f"dpo-{method}-{int(time.time())}"}}
    path = work / f"dpo-{method}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "loratui", "train", str(path)], capture_output=True, text=True)
    wall = time.time() - t0
    run = work / "runs" / cfg["output"]["name"]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]
    steps = [e for e in events if e["kind"] == "step" and e.get("tokens_per_s")][3:]
    mem = [e["peak_allocated_gb"] for e in events if e["kind"] == "memory"]
    last = [e for e in events if e["kind"] == "step"][-1] if steps else {}
    return {"side": f"loratui {method}", "rc": proc.returncode, "wall_s": round(wall, 1),
            "tokens_per_s": statistics.median(e["tokens_per_s"] for e in steps) if steps else None,
            "peak_gb": max(mem) if mem else None, "loss": last.get("loss"),
            "margin": last.get("rewards/margins"), "accuracy": last.get("rewards/accuracies"),
            "tail": "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-1500:]}


TRL_SIDE = r'''
import json, statistics, sys, time, torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer
model_dir, data, out, steps, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
ds = load_dataset("json", data_files=data, split="train")
# the rows as conversations, as the engine renders plain rows for a tokenizer with a chat template: the same tokens
# (a tokenizer without one, as the bench's, gets the plain strings on both sides)
if tok.chat_template:
    ds = ds.map(lambda r: {"prompt": [{"role": "user", "content": r["prompt"]}],
                           "chosen": [{"role": "assistant", "content": r["chosen"]}],
                           "rejected": [{"role": "assistant", "content": r["rejected"]}]})
sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
class Clock(TrainerCallback):
    def __init__(self): self.t = []; self.n = []
    def on_step_begin(self, args, state, control, **kw): sync(); self.t0 = time.perf_counter()
    def on_step_end(self, args, state, control, **kw): sync(); self.t.append(time.perf_counter() - self.t0)
clock = Clock()
args = DPOConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=5e-6,
                 max_length=1024, logging_steps=1, report_to="none", save_strategy="no", beta=0.1)
trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[clock],
                     peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
toks = []
orig = trainer.training_step
def counted(model, inputs, *a, **k):
    toks.append(int(inputs["attention_mask"].sum()))
    return orig(model, inputs, *a, **k)
trainer.training_step = counted
trainer.train()
logs = [h for h in trainer.state.log_history if "loss" in h]
rates = [n / t for n, t in zip(toks, clock.t)][3:]
print("RESULT " + json.dumps({"tokens_per_s": statistics.median(rates), "peak_gb": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
      "loss": logs[-1]["loss"], "margin": logs[-1].get("rewards/margins"), "accuracy": logs[-1].get("rewards/accuracies")}))
'''


def trl_run(model_dir: Path, data: Path, work: Path, args) -> dict:
    script = work / "trl_side.py"
    script.write_text(TRL_SIDE)
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(script), str(model_dir), str(data), str(work / "trl"), str(args.steps),
                           str(args.batch)], capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    res = json.loads(line[7:]) if line else {}
    return {"side": "TRL DPOTrainer (docs)", "rc": proc.returncode, "wall_s": round(time.time() - t0, 1), **res,
            "tail": "" if line else (proc.stdout + proc.stderr)[-1500:]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b", choices=list(SHAPES))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--methods", default="lora,qlora,lora-8bit")
    ap.add_argument("--tokenizer", default=".gpu/tokenizer")
    ap.add_argument("--no-trl", action="store_true")
    args = ap.parse_args()
    work = Path(os.environ.get("WORK", "/tmp/dpo-bench"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir, data = work / f"model-{args.shape}", work / "pairs.jsonl"
    make_model(args.shape, model_dir, Path(args.tokenizer))
    make_pairs(data)
    rows = [] if args.no_trl else [trl_run(model_dir, data, work, args)]
    rows += [engine_run(m, model_dir, data, work, args) for m in args.methods.split(",")]
    print(f"| side | rc | tokens/s | peak GiB | loss at {args.steps} | margin | pref acc | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        print(f"| {r['side']} | {r['rc']} | {fmt(r.get('tokens_per_s'), ',.0f')} | {fmt(r.get('peak_gb'), '.2f')} | "
              f"{fmt(r.get('loss'), '.4f')} | {fmt(r.get('margin'), '.4f')} | {fmt(r.get('accuracy'), '.2f')} | "
              f"{r['wall_s']} |")
    for r in rows:
        if r.get("tail"):
            print(f"--- {r['side']} (rc {r['rc']}):\n{r['tail']}")
    out = os.environ.get("OUT")
    if out:
        Path(out, "dpo_gpu.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
