"""Does this torch's varlen attention take fewer key/value heads than query heads as they are (grouped-query
attention), forward and backward, without the 4x copies loratui.train.speed's varlen function makes where
``varlen_attn`` has no ``enable_gqa``? And what do those copies cost on the 8B shape's packed step?

Usage (on the lent GPU): python bench/gqa_probe.py [--tokens 4480]
Prints the largest difference between the two paths' outputs and gradients, and each path's forward + backward time.
"""

from __future__ import annotations

import argparse
import inspect
import json
import time

import torch
from torch.nn.attention.varlen import varlen_attn


def run(q, k, v, cu, max_len, native: bool):
    kw = {"is_causal": True} if "is_causal" in inspect.signature(varlen_attn).parameters else {"window_size": (-1, 0)}
    if native and "enable_gqa" in inspect.signature(varlen_attn).parameters:
        kw["enable_gqa"] = True
    if not native:
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, **kw)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=4480)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    args = ap.parse_args()
    torch.manual_seed(0)
    dev, dt = "cuda", torch.bfloat16
    lens = torch.randint(32, 1024, (64,))
    lens = lens[: int((lens.cumsum(0) <= args.tokens).sum())]
    cu = torch.cat([torch.zeros(1, dtype=torch.int32), lens.cumsum(0).to(torch.int32)]).to(dev)
    n, max_len = int(cu[-1]), int(lens.max())
    base = [torch.randn(n, h, args.dim, device=dev, dtype=dt) for h in (args.heads, args.kv_heads, args.kv_heads)]
    out = {"torch": torch.__version__, "tokens": n, "enable_gqa": "enable_gqa" in
           inspect.signature(varlen_attn).parameters}
    got = {}
    for native in (False, True):
        q, k, v = (t.clone().requires_grad_(True) for t in base)
        try:
            o = run(q, k, v, cu, max_len, native)
            o.float().square().mean().backward()
        except Exception as err:  # noqa: BLE001 - this torch refuses it: that is the answer
            out["native_error"] = f"{type(err).__name__}: {err}"[:300]
            break
        got[native] = [o.detach().float(), q.grad.float(), k.grad.float(), v.grad.float()]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            q.grad = k.grad = v.grad = None
            run(q, k, v, cu, max_len, native).float().square().mean().backward()
        torch.cuda.synchronize()
        out[f"{'native' if native else 'repeat'}_ms"] = round((time.perf_counter() - t0) / 20 * 1e3, 3)
    if len(got) == 2:
        out["max_abs_diff"] = {name: float((a - b).abs().max()) for name, a, b in
                               zip(("out", "dq", "dk", "dv"), got[False], got[True])}
        out["shapes_match"] = all(a.shape == b.shape for a, b in zip(got[False], got[True]))
    print("GQA_PROBE " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
