"""Decode speed of exported GGUF files in llama.cpp on this machine, best of a few runs (the export's own figure is
one pass over the check's prompts, so a busy machine shows in it).

Usage: python bench/gguf_speed.py EXPORT_DIR [--tokens 64] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    import numpy as np
    from llama_cpp import Llama

    prompt = "Extract the contact as JSON with keys name, city, email.\n\nAda Lovelace lives in Paris, ada@example.org"
    print(f"{'file':<22} {'size MiB':>9} {'decode tok/s':>13} {'prompt tok/s':>13}  (best of {args.repeats}, "
          f"{args.threads} threads, load {os.getloadavg()[0]:.1f})")
    for path in sorted(Path(args.folder).glob("*.gguf")):
        llm = Llama(model_path=str(path), n_ctx=args.tokens + 64, n_threads=args.threads, verbose=False)
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        best_dec = best_pre = 0.0
        for _ in range(args.repeats):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(ids)
            t1 = time.perf_counter()
            for _ in range(args.tokens):  # greedy, never stopping early: the same work every run
                llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
            t2 = time.perf_counter()
            best_pre = max(best_pre, len(ids) / (t1 - t0))
            best_dec = max(best_dec, args.tokens / (t2 - t1))
        print(f"{path.name:<22} {path.stat().st_size / 2**20:>9.1f} {best_dec:>13.1f} {best_pre:>13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
