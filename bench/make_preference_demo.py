"""Write the shipped preference demo (issue 20): sample:contacts-json-pref.jsonl.

For each row of sample:contacts-json.jsonl: prompt = instruction + blank line + input (as the SFT demo renders it),
chosen = the exact JSON answer, rejected = what the base SmolLM2-135M-Instruct really answers, greedily (48 new
tokens, the chat template with its default system prompt, as bench/demo_eval.py asks it). Rows where the base
already answers exactly are left out (a pair must differ). Run once on a CPU; the file is shipped.

Usage: python bench/make_preference_demo.py [--n 800] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from loratui.train.data import SAMPLES_DIR, resolve_source
from loratui.train.generate import load_for_inference, render_prompt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--out", default=str(SAMPLES_DIR / "contacts-json-pref.jsonl"))
    args = ap.parse_args()
    import torch

    rows = [json.loads(line) for line in open(resolve_source("sample:contacts-json.jsonl"))][: args.n]
    model, tok = load_for_inference("smollm2-135m-instruct")
    model.eval()
    tok.pad_token = tok.pad_token or tok.eos_token
    tok.padding_side = "left"  # batched greedy generation: the prompts end where the answers begin
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out, same, t0 = [], 0, time.time()
    for i in range(0, len(rows), args.batch):
        chunk = rows[i:i + args.batch]
        prompts = [f"{r['instruction']}\n\n{r['input']}" for r in chunk]
        texts = [render_prompt(tok, p, None) for p in prompts]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=48, do_sample=False, pad_token_id=pad)
        answers = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for p, r, a in zip(prompts, chunk, answers):
            a = a.strip()
            if a == r["output"]:
                same += 1
                continue
            out.append({"prompt": p, "chosen": r["output"], "rejected": a})
        print(f"{min(i + args.batch, len(rows))}/{len(rows)} rows, {time.time() - t0:.0f}s", flush=True)
    Path(args.out).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    print(f"wrote {len(out)} pairs to {args.out} ({same} rows left out: the base already answers them exactly)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
