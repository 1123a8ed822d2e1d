"""The playground's generation on a random-init Llama shape with a random LoRA adapter: tokens/s for the base model
(adapter disabled) and the adapter, memory before/after loading, peak while generating.

Runs the playground process's own code (``loratui.train.playground_worker.Playground.generate_one``: streamed, greedy,
the adapter toggled with ``disable_adapter()``) on a model built in memory, so nothing is downloaded.

    python bench/playground_gpu.py                          # CUDA when available: llama-1b and llama-8b shapes
    python bench/playground_gpu.py --shape tiny --new 16    # a CPU smoke check (seconds)
    python bench/playground_gpu.py --shape llama-8b --r 16 --new 256 --json out.json

The vocabulary is the embedded SmolLM2 tokenizer's (49,152 tokens), so the embedding and head are smaller than a real
Llama-3's (128,256); every other dimension is the named model's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {
    # hidden, intermediate, layers, heads, kv heads
    "tiny": (64, 128, 2, 4, 2),
    "llama-1b": (2048, 8192, 16, 32, 8),
    "llama-3b": (3072, 8192, 28, 24, 8),
    "llama-8b": (4096, 14336, 32, 32, 8),
}
GIB = 2**30


def build(shape: str, r: int, device: str, dtype, tokenizer: str | None = None):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from loratui.core.config import ModelSection
    from loratui.train.models import resolve_model

    tok = AutoTokenizer.from_pretrained(tokenizer or resolve_model(ModelSection(name="smollm2-135m-instruct")).path)
    hidden, inter, layers, heads, kv = SHAPES[shape]
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its dtype at once: no fp32 copy of an 8B model on the way
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = None  # random weights: generate the full length every time
    model.generation_config.pad_token_id = tok.eos_token_id
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, init_lora_weights=False,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def measure(shape: str, r: int, new: int, device: str, repeats: int, tokenizer: str | None = None) -> dict:
    import torch

    from loratui.train.playground_worker import Playground, memory_now

    cuda = device.startswith("cuda")
    dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda else torch.float32
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before = memory_now(device)
    t0 = time.perf_counter()
    model, tok = build(shape, r, device, dtype, tokenizer)
    load_s = time.perf_counter() - t0
    after = memory_now(device)
    pg = Playground(emit=lambda kind, **data: None)
    pg.model, pg.tokenizer, pg.has_adapter, pg.device = model, tok, True, device
    text = pg.render({"prompt": "Write a short story about a lighthouse keeper who finds a message in a bottle."})
    prompt_tokens = len(tok(text, add_special_tokens=False)["input_ids"])
    pg.generate_one(text, "adapter", max_new_tokens=4)  # warm-up (kernels, caches)
    pg.generate_one(text, "base", max_new_tokens=4)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out: dict = {"shape": shape, "device": torch.cuda.get_device_name() if cuda else "cpu",
                 "dtype": str(dtype).replace("torch.", ""), "r": r, "new_tokens": new, "prompt_tokens": prompt_tokens,
                 "params": sum(p.numel() for p in model.parameters()),
                 "adapter_params": sum(p.numel() for n, p in model.named_parameters() if "lora_" in n),
                 "build_s": round(load_s, 2)}
    for side in ("base", "adapter"):
        rates = []
        for _ in range(repeats):
            res = pg.generate_one(text, side, max_new_tokens=new)
            assert res["tokens"] == new, res
            rates.append(res["tokens_per_s"])
        out[f"{side}_tokens_per_s"] = round(sorted(rates)[len(rates) // 2], 1)
    if cuda:
        out["memory_before_gib"] = round(before.get("cuda_allocated", 0) / GIB, 3)
        out["memory_after_load_gib"] = round(after["cuda_allocated"] / GIB, 3)
        out["reserved_after_load_gib"] = round(after["cuda_reserved"] / GIB, 3)
        out["peak_generating_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
    out["rss_before_gib"] = round(before.get("rss", 0) / GIB, 3)
    out["rss_after_load_gib"] = round(after.get("rss", 0) / GIB, 3)
    del pg, model
    if cuda:
        torch.cuda.empty_cache()
    return out


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", action="append", choices=sorted(SHAPES),
                    help="model shape (repeatable; default: llama-1b and llama-8b on CUDA, tiny on CPU)")
    ap.add_argument("--r", type=int, default=16, help="LoRA rank (all linear layers)")
    ap.add_argument("--new", type=int, default=128, help="new tokens per answer")
    ap.add_argument("--repeats", type=int, default=3, help="answers per side (the median is reported)")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--tokenizer", help="a folder with the SmolLM2 tokenizer (default: the embedded model's)")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    shapes = args.shape or (["llama-1b", "llama-8b"] if device == "cuda" else ["tiny"])
    results = []
    for shape in shapes:
        res = measure(shape, args.r, args.new, device, args.repeats, args.tokenizer)
        results.append(res)
        print(json.dumps(res), flush=True)
    print()
    print("| shape | device | dtype | params | adapter (r) | base tok/s | adapter tok/s | memory after load | "
          "peak generating |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        mem = f"{r['memory_after_load_gib']:.2f} GiB" if "memory_after_load_gib" in r else \
            f"RSS {r['rss_after_load_gib']:.2f} GiB"
        peak = f"{r['peak_generating_gib']:.2f} GiB" if "peak_generating_gib" in r else "-"
        print(f"| {r['shape']} | {r['device']} | {r['dtype']} | {r['params'] / 1e9:.2f}B | "
              f"{r['adapter_params'] / 1e6:.1f}M ({r['r']}) | {r['base_tokens_per_s']} | {r['adapter_tokens_per_s']} | "
              f"{mem} | {peak} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
