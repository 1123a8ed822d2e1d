"""Measure the SmolLM2 demo on held-out prompts: exact JSON answers, base model vs adapter.

Usage: python bench/demo_eval.py runs/NAME/adapter [--n 20] [--no-base] [--misses]
"""

from __future__ import annotations

import argparse
import json
import time

from loratui.train.data import resolve_source
from loratui.train.generate import complete, load_for_inference


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("adapter")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--eval-file", default="sample:contacts-json-eval.jsonl")
    ap.add_argument("--no-base", action="store_true", help="skip the base model (it answers 0 exactly)")
    ap.add_argument("--misses", action="store_true", help="print every wrong adapter answer")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(resolve_source(args.eval_file))][: args.n]
    prompts = [f"{r['instruction']}\n\n{r['input']}" for r in rows]
    model, tok = load_for_inference(args.adapter)
    t0 = time.time()
    tuned = complete(model, tok, prompts, max_new_tokens=48)
    if args.no_base:
        base = [""] * len(rows)
    else:
        with model.disable_adapter():
            base = complete(model, tok, prompts, max_new_tokens=48)
    exact = lambda outs: sum(o.strip() == r["output"] for o, r in zip(outs, rows))  # noqa: E731
    print(f"held-out prompts: {len(rows)}; exact JSON: base {'-' if args.no_base else exact(base)}/{len(rows)}, "
          f"adapter {exact(tuned)}/{len(rows)} ({time.time() - t0:.0f}s)")
    if args.misses:
        for r, t in zip(rows, tuned):
            if t.strip() != r["output"]:
                print(f"miss: want {r['output']}\n      got  {t.strip()}")
    for p, b, t in list(zip(rows, base, tuned))[:2]:
        print(f"\ninput:   {p['input']}\nbase:    {b[:120]!r}\nadapter: {t[:120]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
