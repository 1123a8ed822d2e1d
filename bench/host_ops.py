"""Host-side work of one training step, on the CPU: the ops the step dispatches (each one a kernel launch on a GPU)
and the host milliseconds it takes on a narrow model with the real number of layers.

Usage: python bench/host_ops.py --shape 8b [--variants default,inplace=off] [--steps 14] [--batch 1 --max-length 16]
HOSTOPS_SYNCS=1 prints where each host-device sync (.item(), bool(tensor)) comes from (stderr).
The real engine runs in a child process per variant (``loratui train``'s path, in-process there with a callback the
engine does not carry). The model is the shape's layer count and LoRA targets with a narrow width (64), so the
arithmetic is small and what is left is the host's per-op work, the part of a step that the card waits on when it
is host-bound (bench/RESULTS.md, round 10: 6,745 kernels a step on 8B bf16 LoRA, the GPU ~83% busy).
Variants: ``default``; ``inplace=off`` (peft's LoRA forward instead of loratui.train.inplace_lora); other items are
``section.key=value`` config overrides joined by ``+`` (as bench/speed.py).
Counts are exact and host-independent; milliseconds are from this host (compare sides of one call only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

LAYERS = {"1b": (16, 8, "minimal-qv"), "8b": (32, 16, "llama-all")}  # layers, LoRA r, targets (the GPU benches')
NARROW = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=224, vocab_size=49152)


def make_model(shape: str, folder: Path, tokenizer: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return
    cfg = LlamaConfig(**NARROW, num_hidden_layers=LAYERS[shape][0], max_position_embeddings=1024, bos_token_id=1,
                      eos_token_id=2, pad_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tokenizer)).save_pretrained(str(folder))


def counting_callback(count_step: int, time_from: int, result: dict):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from transformers import TrainerCallback

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: Counter = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:  # a view launches nothing
                self.ops[str(func.overloadpacket)] += 1
            if func.overloadpacket is torch.ops.aten._local_scalar_dense and os.environ.get("HOSTOPS_SYNCS"):
                import traceback  # where the host waits for the device (.item(), bool(tensor)...): a sync on a GPU

                print("SYNC " + "".join(traceback.format_stack(limit=12)[:-1]), file=sys.stderr)
            return func(*args, **(kwargs or {}))

    class Probe(TrainerCallback):
        mode = None
        t0 = t_step = 0.0
        fwd_bwd: list = []

        def on_step_begin(self, args, state, control, **kw):
            self.t_step = time.perf_counter()
            if state.global_step == count_step:
                self.mode = Count()
                self.mode.__enter__()
            if state.global_step == time_from:
                self.t0 = time.perf_counter()
                result["timed_from"] = state.global_step

        def on_pre_optimizer_step(self, args, state, control, **kw):
            if state.global_step >= time_from:
                self.fwd_bwd.append(time.perf_counter() - self.t_step)
                result["host_ms_fwd_bwd"] = round(sorted(self.fwd_bwd)[len(self.fwd_bwd) // 2] * 1e3, 2)  # median
            if self.mode is not None:  # forward and backward: the optimizer (fused on a GPU) is counted apart
                result["ops_per_step"] = sum(self.mode.ops.values())
                result["ops_by_name"] = dict(self.mode.ops.most_common())
                self.mode.ops = Counter()

        def on_step_end(self, args, state, control, **kw):
            if self.mode is not None:
                self.mode.__exit__(None, None, None)
                result["optimizer_ops"] = sum(self.mode.ops.values())
                self.mode = None
            if state.global_step > time_from:
                result["host_ms_per_step"] = round((time.perf_counter() - self.t0) * 1e3 / (state.global_step - time_from), 2)

    torch.set_num_threads(1)  # one core: per-op host work, not a race between threads
    return Probe()


def side(args) -> None:
    """One variant's run, in this process (the child)."""
    from profiling import add_engine_callback

    from loratui.core.config import load_config
    from loratui.core.runs import create_run
    from loratui.train import engine

    result: dict = {"side": args.side}
    if "inplace=off" in args.side.split("+"):
        import loratui.train.inplace_lora as inplace

        inplace.inplace_lora = lambda model: 0
    add_engine_callback(lambda: counting_callback(4, 6, result))
    run = create_run(load_config(args.config))
    rc = engine.Engine(run).run()
    result["exit"] = rc
    print("HOSTOPS " + json.dumps(result), flush=True)


def config(shape: str, model: Path, data: Path, runs: Path, name: str, variant: str, steps: int,
           batch: int = 2, max_length: int = 128) -> dict:
    from speed import apply_override

    _, r, preset = LAYERS[shape]
    cfg = {"model": {"name": str(model)}, "method": {"kind": "lora"},
           "lora": {"r": r, "alpha": 2 * r, "dropout": 0.05, "preset": preset},
           "data": {"source": str(data), "format": "text", "max_length": max_length, "validation_fraction": 0.0},
           "train": {"max_steps": steps, "batch_size": batch, "lr": 2e-4, "logging_steps": 5, "save_steps": 10 * steps,
                     "seed": 42, "precision": "bf16"},
           "output": {"runs_dir": str(runs), "name": name}}
    for item in variant.split("+"):
        if item not in ("default", "inplace=off"):
            apply_override(cfg, item)
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="8b", choices=list(LAYERS))
    ap.add_argument("--variants", default="default,inplace=off")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128, help="16: next to no arithmetic, the host's work alone")
    ap.add_argument("--tokenizer", default=".gpu/tokenizer")
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        side(args)
        return 0
    from gpu_engine import make_data

    work = Path("/tmp/host-ops")
    work.mkdir(exist_ok=True)
    model = work / f"narrow-{args.shape}"
    make_model(args.shape, model, Path(args.tokenizer))
    data = work / "data.jsonl"
    if not data.is_file():
        make_data(data, n=400)
    rows = []
    for variant in args.variants.split(","):
        name = f"{args.shape}-{variant}".replace("=", "-").replace("+", "_").replace(".", "")
        cfg_path = work / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(config(args.shape, model, data, work / "runs", name, variant, args.steps,
                                                 args.batch, args.max_length)))
        import shutil

        shutil.rmtree(work / "runs" / name, ignore_errors=True)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))  # this tree's loratui
        out = subprocess.run([sys.executable, __file__, "--side", variant, "--config", str(cfg_path)],
                             capture_output=True, text=True, env=env)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("HOSTOPS ")), None)
        rows.append(json.loads(line[8:]) if line else {"side": variant, "error": out.stderr[-2000:]})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{args.shape} layers and LoRA targets, width 64, bf16 autocast on the CPU, batch {args.batch} x "
          f"{args.max_length} tokens")
    print("| side | forward + backward ops a step (launches on a GPU) | optimizer ops (CPU's unfused AdamW) | "
          "forward + backward host ms (median) | host ms a step |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['side']} | {r.get('ops_per_step', '-')} | {r.get('optimizer_ops', '-')} | "
              f"{r.get('host_ms_fwd_bwd', '-')} | {r.get('host_ms_per_step', '-')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
