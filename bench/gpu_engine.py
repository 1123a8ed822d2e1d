"""GPU check of the engine: QLoRA and 8-bit runs on random-init Llama shapes loaded through from_pretrained.

Usage (on the lent GPU, see bench/README.md):  python bench/gpu_engine.py --shape 1b --methods qlora,lora-8bit,lora
Each method runs `loratui train` as its own process (the real engine path); this parent samples NVML at 2 Hz through
loratui.core.gpu (card memory and the run's own process memory). Afterwards the adapter is reloaded onto a freshly loaded
(re-quantized) base and compared with the engine's final outputs (saved by the child as probe logits).
Prints a markdown table; writes details to $OUT.
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

SHAPES = {
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=8192, vocab_size=128256),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=49152),
    "8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
               intermediate_size=14336, vocab_size=128256),
}
WORDS = ("the model learns a low rank update while its base weights stay frozen and quantized to four bits "
         "adapters are small files that merge into the base for deployment on any machine").split()


def make_model(shape: str, folder: Path, tokenizer_dir: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return
    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                      pad_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(folder))
    del model
    torch.cuda.empty_cache()


def make_data(path: Path, n: int = 3000, long: bool = False) -> None:
    """Synthetic rows: ``long``, 1,500..3,600 words (most reach a 4,096-token max_length); else 24..900 words."""
    rng = random.Random(0)
    with open(path, "w") as fh:
        for _ in range(n):
            words = int(rng.uniform(1500, 3600)) if long else max(24, min(900, int(rng.lognormvariate(5.4, 0.6))))
            fh.write(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(words))}) + "\n")


def workspace(shape: str, tokenizer: str) -> tuple[Path, Path, Path, Path]:
    """$OUT, the work folder, the random-init model of ``shape`` and the synthetic data (made once per machine)."""
    out = Path(os.environ.get("OUT", "/tmp/bench-out"))
    out.mkdir(parents=True, exist_ok=True)
    work = Path("/tmp/bench-work")
    work.mkdir(exist_ok=True)
    model_dir = work / f"llama-{shape}"
    t = time.time()
    make_model(shape, model_dir, Path(tokenizer))
    print(f"model {shape} ready in {time.time() - t:.0f}s", flush=True)
    long = os.environ.get("BENCH_LONG_ROWS") == "1"
    data = work / ("data-long.jsonl" if long else "data.jsonl")
    make_data(data, n=600 if long else 3000, long=long)
    return out, work, model_dir, data


def config_for(method: str, model_dir: Path, data: Path, runs: Path, args) -> dict:
    lora_all = method == "qlora"
    return {
        "model": {"name": str(model_dir)},
        "method": {"kind": method},
        "lora": {"r": 16 if lora_all else 8, "alpha": 32 if lora_all else 16, "dropout": 0.05,
                 "preset": "llama-all" if lora_all else "minimal-qv"},
        "data": {"source": str(data), "format": "text", "max_length": 1024, "validation_fraction": 0.02,
                 "packing": args.packing},
        "train": {"max_steps": args.steps, "batch_size": args.batch, "lr": 2e-4, "logging_steps": 5,
                  "eval_steps": args.steps, "save_steps": args.steps,
                  "gradient_checkpointing": method == "qlora",
                  "optimizer": "paged_adamw_8bit" if method == "qlora" else "adamw_torch"},
        "output": {"runs_dir": str(runs), "name": f"{method}"},
    }


def run_one(method: str, cfg_path: Path, out: Path) -> dict:
    from loratui.core import gpu
    from loratui.core.runs import RunDir

    cfg = yaml.safe_load(cfg_path.read_text())
    run = RunDir(Path(cfg["output"]["runs_dir"]) / cfg["output"]["name"])
    env = {**os.environ, "LORATUI_PROBE": os.environ.get("LORATUI_PROBE", "1")}
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("probe_engine.py")), str(cfg_path)], env=env,
                            stdout=open(out / f"{method}-train.log", "w"), stderr=subprocess.STDOUT)
    sampler = gpu.GpuSampler(pid=proc.pid)
    card_peak = run_peak = 0
    samples = 0
    while proc.poll() is None:
        snap = sampler.sample()
        samples += 1
        if snap.gpus:
            card_peak = max(card_peak, snap.gpus[0].memory_used or 0)
            run_peak = max(run_peak, snap.run_memory(proc.pid) or 0)
        time.sleep(0.5)
    events = run.events()
    steps = [e for e in events if e["kind"] == "step" and e.get("tokens_per_s")]
    mem = [e for e in events if e["kind"] == "memory"]
    finished = [e for e in events if e["kind"] == "finished"]
    failed = [e for e in events if e["kind"] == "failed"]
    return {
        "method": method, "exit": proc.returncode, "wall_s": round(time.time() - t0, 1),
        "tokens_per_s": statistics.median(e["tokens_per_s"] for e in steps[1:]) if len(steps) > 1 else None,
        "torch_peak_gib": max((e["peak_allocated_gb"] for e in mem), default=None),
        "nvml_card_peak_gib": round(card_peak / 2**30, 2), "nvml_run_peak_gib": round(run_peak / 2**30, 2),
        "nvml_samples": samples, "finished": bool(finished), "failed": failed[-1] if failed else None,
        "run": str(run.path), "final_loss": steps[-1]["loss"] if steps else None,
    }


def reload_check(run_dir: Path, cfg_path: Path) -> dict:
    """Reload the saved adapter onto a freshly loaded base (same quantization) and compare with the probe."""
    import torch
    from peft import PeftModel

    from loratui.train import models
    from loratui.core.config import load_config

    cfg = load_config(cfg_path)
    probe = torch.load(run_dir / "probe.pt")
    resolved = models.resolve_model(cfg.model)
    base = models.load_model(cfg, resolved, "bf16")
    if not cfg.quantized and torch.cuda.is_available():
        base = base.cuda()  # the Trainer moved the engine's model to the GPU; compare on the same device
    if cfg.quantized:  # the engine trained on a prepared base (non-quantized parameters upcast to fp32)
        from peft import prepare_model_for_kbit_training

        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    model = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    with torch.no_grad():
        got = model(input_ids=probe["input_ids"].to(base.device)).logits.float().cpu()
    diff = (got - probe["logits"]).abs().max().item()
    tf32 = None
    if torch.cuda.is_available():  # does the gap close with TF32 matmuls (as during training)?
        prev = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
        with torch.no_grad():
            tf32 = (model(input_ids=probe["input_ids"].to(base.device)).logits.float().cpu()
                    - probe["logits"]).abs().max().item()
        torch.set_float32_matmul_precision(prev)
    ref = probe["logits"].abs().max().item()
    files = {p.name: p.stat().st_size for p in (run_dir / "adapter").iterdir()}
    if "same_process_logits" in probe:
        print("same-process reload diff", (probe["same_process_logits"] - probe["logits"]).abs().max().item(),
              "| trained model run twice diff", (probe["trained_again_logits"] - probe["logits"]).abs().max().item(),
              "| cross-process vs same-process reload", (got - probe["same_process_logits"]).abs().max().item(),
              flush=True)
    return {"reload_max_abs_diff": diff, "reload_diff_tf32": tf32, "logits_max_abs": ref, "adapter_files": files}


def estimate_for(cfg_path: Path) -> dict:
    from loratui.core.config import load_config
    from loratui.train.estimate import count_params, estimate_memory, rule_of_thumb_gb

    cfg = load_config(cfg_path)
    rep = estimate_memory(cfg, compare=False)
    row = rep.rows[0]
    pc = count_params(cfg)
    return {"estimate_gib": round(row.total / 2**30, 2), "estimate_no_overhead_gib":
            round((row.total - row.overhead) / 2**30, 2),
            "parts_gib": {k: round(getattr(row, k) / 2**30, 2) for k in
                          ("weights", "grads", "optimizer", "activations", "overhead")},
            "rule_of_thumb_full_fp32_gb": round(rule_of_thumb_gb(pc.total), 1),
            "trainable": pc.trainable, "total": pc.total}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1b", choices=list(SHAPES))
    ap.add_argument("--methods", default="qlora,lora-8bit")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--packing", action="store_true")
    ap.add_argument("--tokenizer", default=".gpu/tokenizer")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    out, work, model_dir, data = workspace(args.shape, args.tokenizer)
    results = []
    for method in args.methods.split(","):
        runs = work / f"runs-{args.shape}{'-packed' if args.packing else ''}{args.tag}"
        cfg_path = work / f"{args.shape}-{method}.yaml"
        cfg_path.write_text(yaml.safe_dump(config_for(method, model_dir, data, runs, args), sort_keys=False))
        res = {"shape": args.shape, "batch": args.batch, "packing": args.packing, **run_one(method, cfg_path, out)}
        res.update(estimate_for(cfg_path))
        if res["finished"]:
            res.update(reload_check(Path(res["run"]), cfg_path))
        results.append(res)
        print(json.dumps(res), flush=True)
    (out / f"results-{args.shape}{args.tag}.json").write_text(json.dumps(results, indent=1))
    print("\n| shape | method | batch | tokens/s | torch peak GiB | NVML run peak GiB | estimate GiB | "
          "rule of thumb (full fp32) GB | reload max diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['shape']} | {r['method']} | {r['batch']}{' packed' if r['packing'] else ''} | "
              f"{r['tokens_per_s'] or 0:,.0f} | {r['torch_peak_gib']} | {r['nvml_run_peak_gib']} | "
              f"{r['estimate_gib']} | {r['rule_of_thumb_full_fp32_gb']} | {r.get('reload_max_abs_diff')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
