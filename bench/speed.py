"""loratui's defaults against the tutorial's Trainer + peft recipe, side by side, in one process tree on one card.

Usage (on the lent GPU; see bench/NOTES.md):
  python bench/speed.py --shape 1b --method lora  --steps 50 --batch 16 --variants default,liger=off,attention=sdpa
  python bench/speed.py --shape 8b --method qlora --steps 30 --batch 4
Each side runs as its own process (`bench/seed_recipe.py`, and `loratui train` for loratui, the real engine path);
this parent samples NVML at 20 Hz for the child's process memory. tokens/s counts real (non-padding) tokens over
steps 10..N. A variant is `default` or comma-free `section.key=value` overrides joined by `+`
(e.g. `train.liger=off+data.packing=off`; `liger=off` is short for `train.liger=off`).
Prints a markdown table and writes results-*.json under $OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_engine import SHAPES, workspace  # noqa: E402
from patched_train import PATCHES as PATCHED  # noqa: E402 - its levers (variants like inplace=off, head_chunk=8)

CARD_PEAK = [0.0]
PEAK_AT = [0.0]  # wall time of the last child's NVML peak
WINDOW = [10]  # the first step of the timed window (--window-start)
PEAK_BF16 = 989.4e12  # H100 / H200 SXM dense bf16 FLOP/s
SHORT = {"liger": "train.liger", "attention": "train.attention", "packing": "data.packing",
         "optimizer": "train.optimizer", "compile": "train.compile", "gc": "train.gradient_checkpointing",
         "gpus": "train.gpus", "distributed": "train.distributed", "method": "method.kind",
         "lean": "train.lean_activations", "lean_mlp": "train.lean_mlp", "offload": "train.activation_offload",
         "budget": "train.memory_budget", "fit": "train.fit", "fused": "train.fused_lora",
         "embed": "train.embedding_offload", "graphs": "train.cuda_graphs", "wide": "train.wide_loss_chunks"}


class NvmlPeak(threading.Thread):
    """Peak GPU memory NVML reports for one process (what the card shows, allocator caches included)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import pynvml

        self.nvml, self.pid, self.peak, self.done, self.handles = pynvml, pid, 0, False, []
        self.peak_at = 0.0  # when the peak was first seen (bench/speed.py maps it to the run's step)
        self.card_peak = 0  # the busiest card (per-card peak under several processes)
        try:
            pynvml.nvmlInit()
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except pynvml.NVMLError:  # no GPU (a CPU smoke run): no figure
            pass

    def run(self) -> None:
        from loratui.core.gpu import process_tree

        while not self.done:
            pids, used, others, cards = set(process_tree(self.pid) or [self.pid]), 0, [], []
            for h in self.handles:
                try:
                    procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(h)
                except self.nvml.NVMLError:
                    continue
                mine = sum(p.usedGpuMemory or 0 for p in procs if p.pid in pids)
                used += mine
                cards.append(mine or sum(p.usedGpuMemory or 0 for p in procs))
                others += [p.usedGpuMemory or 0 for p in procs if p.pid not in pids]
            if not used and len(others) == 1:  # another pid namespace: the bench's child is the only process
                used = others[0]
            if used > self.peak:
                self.peak, self.peak_at = used, time.time()
            self.card_peak = max([self.card_peak, *cards])
            time.sleep(0.05)


def run_events(run_dir: Path) -> list[dict]:
    """The run's events as plain dicts, read through the app's own reader (none yet: an empty list)."""
    from loratui.core.runs import RunDir

    return [e.to_dict() for e in RunDir(run_dir).events()]


def run_child(cmd: list[str], log: Path, timeout: float = 300) -> tuple[int, float, float]:
    """Exit code, start time, NVML peak GiB of the child's process tree (all cards); per-card peak in CARD_PEAK."""
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        peak = NvmlPeak(proc.pid)
        peak.start()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        peak.done = True
    CARD_PEAK[0] = peak.card_peak / 2**30
    PEAK_AT[0] = peak.peak_at
    return proc.returncode, t0, peak.peak / 2**30


def window(marks: list[tuple[int, float, int]], start: int = 10) -> float | None:
    """Real tokens per second between step ``start`` and the last step."""
    marks = [m for m in marks if m[0] >= start]
    if len(marks) < 2:
        return None
    (_, t_a, n_a), (_, t_b, n_b) = marks[0], marks[-1]
    return (n_b - n_a) / (t_b - t_a) if t_b > t_a else None


def linear_params(shape: str) -> int:
    s = SHAPES[shape]
    h, i, layers, v = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], s["vocab_size"]
    kv = h * s["num_key_value_heads"] // s["num_attention_heads"]
    return layers * (2 * h * h + 2 * h * kv + 3 * h * i) + h * v


def mfu(tps: float | None, shape: str) -> float | None:
    # LoRA keeps the base frozen: forward (2N) + backward to the inputs (2N) per token; attention is left out
    return 4 * linear_params(shape) * tps / PEAK_BF16 if tps else None


def seed_side(args, model_dir: Path, data: Path, out: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).with_name("seed_recipe.py")), "--model", str(model_dir), "--data",
           str(data), "--method", args.method, "--steps", str(args.steps), "--batch", str(args.batch)]
    rc, t0, nvml = run_child(cmd, out / "seed.log")
    res = {"side": "tutorial recipe", "exit": rc, "nvml_peak_gib": round(nvml, 2)}
    lines = [ln for ln in (out / "seed.log").read_text().splitlines() if ln.startswith('{"marks"')]
    if rc == 0 and lines:
        got = json.loads(lines[-1])
        res.update(tokens_per_s=window(got["marks"], WINDOW[0]), torch_peak_gib=round(got["torch_peak_gib"], 2),
                   final_loss=got["losses"][-1][1], first_step_s=round(got["first_step_wall"] - t0, 1))
    return res


def unsloth_side(args, model_dir: Path, data: Path, out: Path) -> dict:
    """Unsloth's recommended recipe (bench/unsloth_recipe.py) in its own install (/tmp/usite, or $UNSLOTH_SITE)."""
    site = os.environ.get("UNSLOTH_SITE", "/tmp/usite")
    cmd = ["env", f"PYTHONPATH={site}", sys.executable, str(Path(__file__).with_name("unsloth_recipe.py")),
           "--model", str(model_dir), "--data", str(data), "--method", args.method, "--steps", str(args.steps),
           "--batch", str(args.batch), "--max-length", str(args.max_length)] + (["--profile"] if args.profile else [])
    rc, t0, nvml = run_child(cmd, out / "unsloth.log", args.timeout)
    res = {"side": "unsloth", "exit": rc, "nvml_peak_gib": round(nvml, 2)}
    lines = [ln for ln in (out / "unsloth.log").read_text().splitlines() if ln.startswith('{"marks"')]
    if rc == 0 and lines:
        got = json.loads(lines[-1])
        res.update(tokens_per_s=window(got["marks"], WINDOW[0]), torch_peak_gib=round(got["torch_peak_gib"], 2),
                   final_loss=got["losses"][-1][1] if got["losses"] else None,
                   first_step_s=round(got["first_step_wall"] - t0, 1), padding_free=got.get("padding_free"))
    return res


def apply_override(cfg: dict, item: str) -> None:
    key, _, value = item.partition("=")
    key = SHORT.get(key, key)
    section, name = key.split(".")
    cfg.setdefault(section, {})[name] = yaml.safe_load(value)


def loratui_config(args, model_dir: Path, data: Path, runs: Path, name: str, variant: str) -> dict:
    qlora = args.method == "qlora"
    cfg = {
        "model": {"name": str(model_dir)},
        "method": {"kind": args.method},
        "lora": {"r": 16 if qlora else 8, "alpha": 32 if qlora else 16, "dropout": 0.05,
                 "preset": "llama-all" if qlora else "minimal-qv"},
        "data": {"source": str(data), "format": "text", "max_length": getattr(args, "max_length", 1024),
                 "validation_fraction": 0.0},
        "train": {"max_steps": args.steps + (6 if getattr(args, "profile", False) else 0), "batch_size": args.batch, "lr": 2e-4, "logging_steps": 5,
                  "save_steps": 10 * args.steps, "seed": 42},
        "output": {"runs_dir": str(runs), "name": name},
    }
    for item in [] if variant == "default" else variant.split("+"):
        if item.partition("=")[0] not in PATCHED:  # bench/patched_train.py's levers are not config keys
            apply_override(cfg, item)
    return cfg


def loratui_side(args, model_dir: Path, data: Path, out: Path, variant: str) -> dict:
    runs = Path("/tmp/bench-work/speed-runs")
    name = f"{args.shape}-{args.method}-{variant}".replace("=", "-").replace("+", "_").replace(".", "")
    cfg_path = Path("/tmp/bench-work") / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(loratui_config(args, model_dir, data, runs, name, variant)))
    run_dir = runs / name
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "loratui", "train", str(cfg_path)]
    patches = [item for item in variant.split("+") if item.partition("=")[0] in PATCHED]
    if patches:  # a lever without a config switch: the same engine in a process that patches it first
        cmd = [sys.executable, str(Path(__file__).with_name("patched_train.py")), str(cfg_path), "+".join(patches)]
    if args.profile:  # the same engine in this script's process, 5 steps traced after the timed ones
        os.environ.update(PROFILE_START=str(args.steps), PROFILE_SAME_NAME="1")
        cmd = [sys.executable, str(Path(__file__).with_name("profile_loratui.py")), str(cfg_path), *(
            ["+".join(patches)] if patches else [])]
    rc, t0, nvml = run_child(cmd, out / f"{name}.log", args.timeout)
    res = {"side": f"loratui {variant}", "exit": rc, "nvml_peak_gib": round(nvml, 2),
           "nvml_card_peak_gib": round(CARD_PEAK[0], 2)}
    events = run_events(run_dir)
    steps = [e for e in events if e.get("kind") == "step"]
    mem = [e for e in events if e.get("kind") == "memory"]
    started = [e for e in events if e.get("kind") == "started"]
    failed = [e for e in events if e.get("kind") == "failed"]
    if steps:
        marks = [(e["step"], e["elapsed"], e["tokens_seen"]) for e in steps if e["step"] <= args.steps]
        res.update(tokens_per_s=window(marks, WINDOW[0]), final_loss=steps[-1].get("loss"),
                   first_step_s=round(steps[0]["time"] - t0, 1),
                   first_line_tokens_per_s=steps[1].get("tokens_per_s") if len(steps) > 1 else None,
                   median_line_tokens_per_s=sorted(e["tokens_per_s"] for e in steps[1:] if e.get("tokens_per_s"))[
                       len(steps[1:]) // 2] if len(steps) > 2 else None)
    if steps:  # the last step logged before NVML's peak (0: before the first step's line)
        res["nvml_peak_after_step"] = max([e["step"] for e in steps if e["time"] <= PEAK_AT[0]], default=0)
    if mem:
        res["torch_peak_gib"] = max((e.get("peak_allocated_gb") or 0) for e in mem)
        res["torch_reserved_gib"] = max((e.get("reserved_gb") or 0) for e in mem)
    if started:
        res["speed"] = started[-1].get("speed")
        res.update({k: started[-1].get(k) for k in ("world_size", "distributed", "effective_batch")})
    if failed:
        res["failed"] = failed[-1].get("message")
    try:  # what Setup would have shown before launch
        from loratui.core.config import load_config
        from loratui.train.estimate import estimate_memory

        res["estimate_gib"] = round(estimate_memory(load_config(cfg_path), compare=False).rows[0].total / 2**30, 2)
    except Exception as err:  # noqa: BLE001
        res["estimate_gib"] = f"error: {err}"
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b", choices=list(SHAPES))
    ap.add_argument("--method", default="lora", choices=["lora", "qlora"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--variants", default="default")
    ap.add_argument("--no-seed", action="store_true")
    ap.add_argument("--unsloth", action="store_true", help="Unsloth's recipe first; the x columns compare with it")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--window-start", type=int, default=10,
                    help="tokens/s from this step to the last (later: after CUDA graphs' captures of each step size)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds for each side before it is killed")
    ap.add_argument("--tokenizer", default=".gpu/tokenizer")
    ap.add_argument("--profile", action="store_true",
                    help="trace 3 steps after the timed ones on every side, card only then host and card "
                         "(PROFILE and PROFILE_GAPS lines; profile-*.txt, gaps-*.txt under $OUT)")
    args = ap.parse_args()
    WINDOW[0] = args.window_start
    os.environ["BENCH_WINDOW_START"] = str(args.window_start)  # Unsloth's recipe marks the same window
    out, _, model_dir, data = workspace(args.shape, args.tokenizer)
    results = [] if args.no_seed else [seed_side(args, model_dir, data, out)]
    if args.unsloth:
        results.insert(0, unsloth_side(args, model_dir, data, out))
    for r in results:
        print(json.dumps(r), flush=True)
    for variant in args.variants.split(","):
        results.append(loratui_side(args, model_dir, data, out, variant))
        print(json.dumps(results[-1]), flush=True)
    base = results[0].get("tokens_per_s") if not args.no_seed or args.unsloth else None
    base_mem = results[0].get("nvml_peak_gib") if not args.no_seed or args.unsloth else None
    device = ""
    try:
        import torch

        device = torch.cuda.get_device_name()
    except Exception:  # noqa: BLE001
        pass
    (out / f"results-{args.shape}-{args.method}.json").write_text(json.dumps(results, indent=1))
    print(f"\n{args.shape} {args.method}, batch {args.batch}, {args.steps} steps, {device}")
    print(f"baseline (x columns): {results[0]['side'] if base else '-'}")
    print("| side | tokens/s | x base | NVML peak GiB | x base | torch peak GiB | estimate GiB | MFU | final loss | "
          "first step s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        tps, mem = r.get("tokens_per_s"), r.get("nvml_peak_gib")
        m = mfu(tps, args.shape)
        print(f"| {r['side']} | {tps or 0:,.0f} | {tps / base if tps and base else 0:.2f} | {mem} | "
              f"{mem / base_mem if mem and base_mem else 0:.2f} | {r.get('torch_peak_gib')} | {r.get('estimate_gib', '-')} | "
              f"{100 * m if m else 0:.1f}% | {r.get('final_loss')} | {r.get('first_step_s')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
