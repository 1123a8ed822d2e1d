"""peft's LoRA projection with the adapter's output added into the frozen layer's output in place.

peft computes ``result + lora_B(lora_A(dropout(x))) * scaling``: the multiply and the add each read and write the
projection's whole output (tokens x out features) in the forward pass, and the multiply once more in the backward
pass. On the 8B bf16 LoRA step (all linear layers, 16 rows; bench/RESULTS.md, round 10) those were 12 ms of
``mul`` and 10 ms of ``add`` kernels of a 289 ms step, 3 of peft's ~6,700 kernels a step per adapted projection,
and peft's forward runs a dozen checks in Python for each. Here the product is added by the matmul itself
(``addmm_``, scaling as its alpha, into the frozen layer's output, which nothing keeps for the backward pass), in a
few lines of Python; autograd's own nodes do the backward pass, so nothing is hand-written there.

Only a plain LoRA adapter on a 16-bit (or fp32) ``torch.nn.Linear`` takes this path: one active adapter, no DoRA or
other variant, no adapter bias, not merged, adapters enabled, no extra arguments (peft's mixed-batch
``adapter_names``). A quantized base's output is left to peft (it clones bitsandbytes' 4-bit output before adding,
against backward errors on views). Anything else runs peft's own forward; fused projections (``train.fused_lora``)
keep theirs.
"""

from __future__ import annotations

import torch


def _inplace_forward(layer, peft_forward):
    def forward(x, *args, **kwargs):
        active = layer.active_adapters
        if args or kwargs or layer.disable_adapters or layer.merged or len(active) != 1:
            return peft_forward(x, *args, **kwargs)
        name = active[0]
        if name not in layer.lora_A or name in (getattr(layer, "lora_variant", None) or {}):
            return peft_forward(x, *args, **kwargs)
        # the frozen output as a 2-d tensor of its own: adding into a view of it would make autograd copy the
        # gradient back through the view (a clone and a copy per projection in the backward pass)
        out = layer.base_layer(x.reshape(-1, x.shape[-1]))
        if out._base is not None or not out.is_contiguous():
            return _added(layer, name, x, out.view(*x.shape[:-1], out.shape[-1]))
        copies = getattr(layer, "loratui_copies", None)  # 16-bit copies of A and B (loratui.train.adapter_copies)
        if copies is not None:
            xa, w = torch.nn.functional.linear(layer.lora_dropout[name](x), copies[0]), copies[1]
        else:
            xa = layer.lora_A[name](layer.lora_dropout[name](x))  # as peft calls it (lean's A knows its input by shape)
            w = layer.lora_B[name].weight
        dtype = out.dtype
        xa = xa if xa.dtype == dtype else xa.to(dtype)
        w = w if w.dtype == dtype else w.to(dtype)
        out.addmm_(xa.reshape(-1, xa.shape[-1]), w.t(), alpha=float(layer.scaling[name]))
        return out.view(*x.shape[:-1], out.shape[-1])

    return forward


def _added(layer, name, x, result):
    """peft's arithmetic, out of place, for an output that cannot be added into."""
    lora = layer.lora_B[name](layer.lora_A[name](layer.lora_dropout[name](x))) * layer.scaling[name]
    return result + lora.to(result.dtype)


def inplace_lora(model) -> int:
    """Install the in-place forward on every plain LoRA projection of ``model`` (not the fused ones); returns how
    many."""
    from peft.tuners.lora import LoraLayer

    n = 0
    for module in model.modules():
        if not isinstance(module, LoraLayer) or not hasattr(module, "lora_A") or getattr(module, "loratui_fused", 0):
            continue
        if type(module.base_layer) is not torch.nn.Linear:  # a 4-bit base's output is cloned by peft before adding
            continue
        names = list(module.lora_A.keys())
        if len(names) != 1 or names[0] in (getattr(module, "lora_variant", None) or {}):
            continue
        b = module.lora_B[names[0]]
        if not isinstance(b, torch.nn.Linear) or b.bias is not None or module.lora_A[names[0]].bias is not None:
            continue
        module.forward = _inplace_forward(module, module.forward)
        module.loratui_inplace = True
        n += 1
    return n
