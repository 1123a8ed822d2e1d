"""Would CUDA graphs of whole decoder layers lift the host-bound LoRA/QLoRA step? (issue 16, round 6: the GPU is
busy 17-21% of an 8B QLoRA step, for Unsloth and for us: bench/NOTES.md).

One process, one card, no Trainer: the 8B shape cut to ``--layers`` layers, a 4-bit base (``--method qlora``) or a
bf16 one (``lora``), peft LoRA r=16 on all linear layers with dropout 0 (capture-safe), bf16 throughout, one packed
row of ``--tokens`` tokens holding 4 sequences, loratui's varlen attention. Forward + backward of the model (no
optimizer) timed eager, then with every decoder layer captured by ``torch.cuda.make_graphed_callables`` (forward
and backward graphs; the embeddings, rotary tables, head and loss stay eager); the LoRA gradients of both compared.
This is a probe for the next device call, not an engine path: a fixed token count a step is what graphs need
(packing into fixed-size bins), and the engine has none yet.

Usage: python bench/graph_probe.py [--method qlora] [--layers 8] [--tokens 1024] [--steps 20]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_engine import SHAPES  # noqa: E402

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(method: str, layers: int):
    from peft import LoraConfig, get_peft_model
    from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

    from loratui.train import speed

    speed.register_varlen_attention()
    cfg = LlamaConfig(**{**SHAPES["8b"], "num_hidden_layers": layers}, max_position_embeddings=4096,
                      tie_word_embeddings=False)
    folder = Path(tempfile.mkdtemp(prefix="graph-probe-"))
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(str(folder))
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16) if method == "qlora" else None
    model = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16, quantization_config=quant,
                                             device_map={"": 0}, attn_implementation=speed.VARLEN)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=ALL))
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.02)
    model.enable_input_require_grads()  # the first layer's input needs a gradient, as the graph was captured
    return model


class LayerCall(torch.nn.Module):
    """A decoder layer as a function of tensors only (what make_graphed_callables captures)."""

    def __init__(self, layer, cu: torch.Tensor, longest: int):
        super().__init__()
        self.layer, self.cu, self.longest = layer, cu, longest

    def forward(self, hidden, cos, sin):
        return self.layer(hidden, position_embeddings=(cos, sin), cu_seq_lens_q=self.cu, cu_seq_lens_k=self.cu,
                          max_length_q=self.longest, max_length_k=self.longest)


class Graphed(torch.nn.Module):
    """Stands in for a decoder layer inside the model: calls its captured graphs."""

    def __init__(self, call):
        super().__init__()
        self.call = call

    def forward(self, hidden_states, position_embeddings=None, **kwargs):
        cos, sin = position_embeddings
        return self.call(hidden_states, cos, sin)


def step(model, ids, cu, longest) -> None:
    out = model(input_ids=ids, labels=ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest,
                max_length_k=longest, position_ids=POS[0])
    out.loss.backward()


def timed(model, ids, cu, longest, steps: int) -> float:
    for _ in range(3):
        step(model, ids, cu, longest)
        model.zero_grad(set_to_none=False)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(model, ids, cu, longest)
        model.zero_grad(set_to_none=False)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def lora_grads(model) -> dict:
    # a graphed layer is the same module inside Graphed(...).call (LayerCall.layer): drop those steps of the names
    return {n.replace(".call.layer.", "."): p.grad.detach().float().clone() for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None}


POS: list = [None]


def precision_variants(model, ids, cu, longest, steps: int) -> dict:
    """The same eager step as the engine's Trainer runs it: LoRA weights in fp32 (peft's default) under bf16
    autocast, then with dropout 0.05 on the adapters' input too; back to bf16 weights without dropout after."""
    from peft.tuners.lora import LoraLayer

    lora = [p for p in model.parameters() if p.requires_grad]
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    model.zero_grad(set_to_none=True)
    for p in lora:
        p.data = p.data.float()
    res = {}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        res["amp_fp32_lora_ms"] = round(timed(model, ids, cu, longest, steps), 1)
        for m in layers:
            m.lora_dropout["default"] = torch.nn.Dropout(0.05)
        res["amp_fp32_lora_dropout_ms"] = round(timed(model, ids, cu, longest, steps), 1)
    for m in layers:
        m.lora_dropout["default"] = torch.nn.Identity()
    for p in lora:
        p.data = p.data.to(torch.bfloat16)
    model.zero_grad(set_to_none=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", choices=["qlora", "lora"], default="qlora")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    model = build(args.method, args.layers)
    T, seqs = args.tokens, 4
    longest = T // seqs
    ids = torch.randint(0, 32000, (1, T), device="cuda")
    cu = torch.arange(0, T + 1, longest, device="cuda", dtype=torch.int32)
    POS[0] = torch.arange(longest, device="cuda").repeat(seqs).unsqueeze(0)
    eager_ms = timed(model, ids, cu, longest, args.steps)
    precision = precision_variants(model, ids, cu, longest, args.steps)
    step(model, ids, cu, longest)
    want = lora_grads(model)
    model.zero_grad(set_to_none=False)

    inner = model.base_model.model.model
    h = inner.config.hidden_size
    cos, sin = inner.rotary_emb(torch.zeros(1, T, h, device="cuda", dtype=torch.bfloat16), POS[0])
    calls = tuple(LayerCall(layer, cu, longest) for layer in inner.layers)
    samples = tuple((torch.randn(1, T, h, device="cuda", dtype=torch.bfloat16, requires_grad=True), cos, sin)
                    for _ in calls)
    t0 = time.perf_counter()
    graphed = torch.cuda.make_graphed_callables(calls, samples)
    capture_s = time.perf_counter() - t0
    inner.layers = torch.nn.ModuleList(Graphed(g) for g in graphed)
    graph_ms = timed(model, ids, cu, longest, args.steps)
    model.zero_grad(set_to_none=False)
    step(model, ids, cu, longest)
    got = lora_grads(model)
    worst = max(float((got[k] - v).norm() / (v.norm() + 1e-12)) for k, v in want.items())
    print(json.dumps({"method": args.method, "layers": args.layers, "tokens": T, "eager_ms": round(eager_ms, 1),
                      "graphed_ms": round(graph_ms, 1), "speedup": round(eager_ms / graph_ms, 2),
                      "capture_s": round(capture_s, 1), **precision, "worst_rel_grad_diff": worst,
                      "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
